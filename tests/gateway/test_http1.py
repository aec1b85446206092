"""The lean HTTP/1.1 transport against appliances that behave in every allowed (and some odd) way.

Each appliance here is a raw asyncio server on loopback, so the test controls
the bytes on the wire: keep-alive, close-delimited bodies, interim answers,
connections dropped while idle, garbage.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest

from tests.conftest import GatewayStarter, mint, raw_request

Answer = Callable[[bytes, bytes], bytes]  # (request head, request body) -> raw answer bytes


@dataclass
class RawAppliance:
    """Reads requests (Content-Length or chunked bodies), answers with ``answer``, counts connections."""

    answer: Answer
    close_after: int = 0  # close the connection after this many answers (0: keep it open)
    connections: int = 0
    requests: list[tuple[bytes, bytes]] = field(default_factory=list)
    url: str = ""
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        answered = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                body = await read_body(reader, head)
                self.requests.append((head, body))
                writer.write(self.answer(head, body))
                await writer.drain()
                answered += 1
                if self.close_after and answered >= self.close_after:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def read_body(reader: asyncio.StreamReader, head: bytes) -> bytes:
    lowered = head.lower()
    if b"transfer-encoding: chunked" in lowered:
        body = b""
        while True:
            size = int((await reader.readline()).strip(), 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                return body
            body += chunk[:-2]
    for line in lowered.split(b"\r\n"):
        if line.startswith(b"content-length:"):
            return await reader.readexactly(int(line.split(b":")[1]))
    return b""


def ok(body: bytes = b"fine", *extra: bytes) -> bytes:
    return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n%b\r\n%b" % (len(body), b"".join(extra), body)


Start = Callable[[RawAppliance], Awaitable[str]]


@pytest.fixture
async def appliance() -> asyncio.AsyncIterator[Start]:  # type: ignore[name-defined]
    running: list[tuple[asyncio.Server, RawAppliance]] = []

    async def start(raw: RawAppliance) -> str:
        server = await asyncio.start_server(raw.serve, "127.0.0.1", 0)
        running.append((server, raw))
        raw.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        return raw.url

    yield start
    for server, raw in running:
        server.close()
        for writer in raw.writers:  # connections labgate still keeps alive
            writer.close()
        await server.wait_closed()
        await asyncio.sleep(0)


def bearer() -> dict[str, str]:
    return {"Authorization": f"Bearer {mint()}"}


async def test_connections_are_kept_alive_and_reused(start_http1_gateway: GatewayStarter, appliance: Start) -> None:
    raw = RawAppliance(lambda head, body: ok())
    gateway = await start_http1_gateway(await appliance(raw))
    async with aiohttp.ClientSession() as session:
        for _ in range(5):
            async with session.get(f"{gateway.url}/demo/api/hosts", headers=bearer()) as response:
                assert (response.status, await response.read()) == (200, b"fine")
    assert raw.connections == 1 and len(raw.requests) == 5


async def test_framing_is_labgates_own(start_http1_gateway: GatewayStarter, appliance: Start) -> None:
    raw = RawAppliance(lambda head, body: ok())
    gateway = await start_http1_gateway(await appliance(raw))

    async def chunks():  # type: ignore[no-untyped-def]
        for part in (b"abc", b"defg"):
            yield part

    async with aiohttp.ClientSession() as session:
        async with session.put(f"{gateway.url}/demo/api/upload", data=b"hello", headers=bearer()) as response:
            assert response.status == 200
        async with session.put(f"{gateway.url}/demo/api/upload", data=chunks(), headers=bearer()) as response:
            assert response.status == 200
        async with session.post(f"{gateway.url}/demo/api/backups/b1/restore", headers=bearer()) as response:
            assert response.status == 200
    (first_head, first_body), (second_head, second_body), (third_head, _) = raw.requests
    assert first_body == b"hello" and b"content-length: 5\r\n" in first_head.lower()
    assert second_body == b"abcdefg" and b"transfer-encoding: chunked" in second_head.lower()
    assert b"content-length" not in second_head.lower()
    assert b"content-length: 0\r\n" in third_head.lower()
    assert all(head.lower().count(b"\r\nhost: ") == 1 for head, _ in raw.requests)


async def test_close_delimited_answer_passes_whole(start_http1_gateway: GatewayStarter, appliance: Start) -> None:
    raw = RawAppliance(lambda head, body: b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n" + b"z" * 70000, close_after=1)
    gateway = await start_http1_gateway(await appliance(raw))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gateway.url}/demo/api/hosts", headers=bearer()) as response:
            assert response.status == 200
            assert await response.read() == b"z" * 70000


async def test_interim_answers_are_skipped(start_http1_gateway: GatewayStarter, appliance: Start) -> None:
    raw = RawAppliance(lambda head, body: b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n" + ok(b"after hints"))
    gateway = await start_http1_gateway(await appliance(raw))
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gateway.url}/demo/api/hosts", headers=bearer()) as response:
            assert (response.status, await response.read()) == (200, b"after hints")
            assert "Link" not in response.headers


async def test_a_head_answer_is_never_followed_on_its_connection(start_http1_gateway: GatewayStarter, appliance: Start) -> None:
    raw = RawAppliance(lambda head, body: b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n" + (b"" if head.startswith(b"HEAD") else b"full"))
    gateway = await start_http1_gateway(await appliance(raw))
    async with aiohttp.ClientSession() as session:
        async with session.head(f"{gateway.url}/demo/api/hosts", headers=bearer()) as response:
            assert response.status == 200 and response.headers["Content-Length"] == "4"
        async with session.get(f"{gateway.url}/demo/api/hosts", headers=bearer()) as response:
            assert await response.read() == b"full"
    assert raw.connections == 2


async def test_a_connection_dropped_while_idle_is_retried_for_requests_without_body(
    start_http1_gateway: GatewayStarter, appliance: Start
) -> None:
    raw = RawAppliance(lambda head, body: ok(), close_after=1)  # keep-alive promised, then gone
    gateway = await start_http1_gateway(await appliance(raw))
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            async with session.get(f"{gateway.url}/demo/api/hosts", headers=bearer()) as response:
                assert response.status == 200
            await asyncio.sleep(0.05)  # let the close reach labgate, or not: both must work
    assert len(raw.requests) == 3


async def test_a_request_with_a_body_is_never_replayed(start_http1_gateway: GatewayStarter, appliance: Start) -> None:
    raw = RawAppliance(lambda head, body: b"", close_after=1)  # reads the request, answers nothing
    gateway = await start_http1_gateway(await appliance(raw))
    async with aiohttp.ClientSession() as session:
        async with session.put(f"{gateway.url}/demo/api/upload", data=b"once", headers=bearer()) as response:
            body = await response.json()
    assert (response.status, body["reason"]) == (502, "upstream_unreachable")
    assert [b for _, b in raw.requests] == [b"once"]


@pytest.mark.parametrize(
    "answer",
    [b"NOT HTTP AT ALL\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
    ids=["garbage", "bad_length", "bad_chunk"],
)
async def test_a_malformed_answer_is_502(start_http1_gateway: GatewayStarter, appliance: Start, answer: bytes) -> None:
    raw = RawAppliance(lambda head, body: answer, close_after=1)
    gateway = await start_http1_gateway(await appliance(raw))
    async with aiohttp.ClientSession() as session:
        try:
            async with session.get(f"{gateway.url}/demo/api/hosts", headers=bearer()) as response:
                status = response.status
                payload = await response.read()
        except aiohttp.ClientPayloadError:
            return  # headers were already sent: the connection is cut, which the client sees
    assert status == 502, payload
    body = json.loads(payload)
    assert (body["reason"], body["error"]) == ("upstream_unreachable", "bad_gateway")


async def test_silent_appliance_is_504(start_http1_gateway: GatewayStarter, appliance: Start) -> None:
    done = asyncio.Event()

    async def never(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await done.wait()  # answers nothing until the test is over
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(never, "127.0.0.1", 0)
    async with server:
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        gateway = await start_http1_gateway(url)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{gateway.url}/demo/api/hosts", headers=bearer()) as response:
                body = await response.json()
        done.set()
        await asyncio.sleep(0.05)
    assert (response.status, body["reason"]) == (504, "upstream_timeout")


async def test_the_request_target_is_sent_exactly(start_http1_gateway: GatewayStarter, appliance: Start) -> None:
    raw = RawAppliance(lambda head, body: ok())
    gateway = await start_http1_gateway(await appliance(raw))
    for target in ("/demo/api/hosts?", "/demo/api/h%6Fsts?limit=1&LIMIT=2"):
        head = f"GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {mint()}\r\nConnection: close\r\n\r\n"
        await raw_request(gateway.port, head)
    lines = [head.split(b"\r\n", 1)[0] for head, _ in raw.requests]
    assert lines == [
        b"GET /api/hosts? HTTP/1.1",
        b"GET /api/h%6Fsts?limit=1&LIMIT=2 HTTP/1.1",
    ]


@dataclass
class SplitAppliance(RawAppliance):
    """Answers the first request's body in two writes a moment apart, every later one in one write."""

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            for number in range(3):
                head = await reader.readuntil(b"\r\n\r\n")
                self.requests.append((head, await read_body(reader, head)))
                answer = self.answer(head, b"")
                if number == 0:
                    writer.write(answer[:-3])
                    await writer.drain()
                    await asyncio.sleep(0.05)  # the gateway starts reading before the rest arrives
                    writer.write(answer[-3:])
                else:
                    writer.write(answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def test_answers_arriving_whole_or_in_pieces_pass_whole_on_one_connection(
    start_http1_gateway: GatewayStarter, appliance: Start
) -> None:
    bodies = iter([b"first answer, sent in two pieces", b"second, whole", b"third, whole"])
    raw = SplitAppliance(lambda head, body: ok(next(bodies)))
    gateway = await start_http1_gateway(await appliance(raw))
    async with aiohttp.ClientSession() as session:
        seen = []
        for _ in range(3):
            async with session.get(f"{gateway.url}/demo/api/hosts", headers=bearer()) as response:
                seen.append((response.status, await response.read()))
    assert seen == [(200, b"first answer, sent in two pieces"), (200, b"second, whole"), (200, b"third, whole")]
    assert raw.connections == 1


async def test_a_full_pool_answers_upstream_busy_after_the_connect_timeout(appliance: Start) -> None:
    """Every connection busy past the wait: an error value of the transport's own, never a bare timeout (a 500)."""
    from proxy.config import load_config
    from proxy.gateway.http1 import Http1Transport
    from proxy.gateway.transport import OutboundRequest, UpstreamError

    hold = asyncio.Event()

    async def slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await hold.wait()
        writer.close()

    server = await asyncio.start_server(slow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    import tempfile
    from pathlib import Path

    from tests.conftest import write_config

    with tempfile.TemporaryDirectory() as folder:
        config = load_config(write_config(Path(folder), f"http://127.0.0.1:{port}", upstream={"timeouts": {"connect": 0.3, "read": 5}}))
    transport = Http1Transport(config.upstreams[0], limit=1)
    request = OutboundRequest("GET", "/api/hosts", [], None)
    first = asyncio.create_task(transport.send(request))
    await asyncio.sleep(0.1)
    with pytest.raises(UpstreamError) as refused:
        await transport.send(request)
    assert refused.value.reason.code == "upstream_busy" and refused.value.nothing_sent
    hold.set()
    with pytest.raises(UpstreamError):
        await first
    await transport.close()
    server.close()
    await server.wait_closed()
