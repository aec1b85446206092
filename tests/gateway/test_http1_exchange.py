"""One exchange on the lean HTTP/1.1 transport, seen through the interface forwarding uses.

``send`` gives the answer's status and headers, ``read`` its whole body, ``release``
the connection back.  Answers arrive whole in one read (most small API answers:
parsed and complete before the request's coroutine wakes) or in pieces down to
single bytes (the head first, the body later); both must give the same answer,
and a connection goes back to the pool only when its answer was taken whole.
Each appliance is a raw asyncio server on loopback writing exactly the pieces given.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from proxy.config import load_config
from proxy.gateway.http1 import Http1Transport
from proxy.gateway.transport import OutboundRequest, UpstreamError
from tests.conftest import write_config

Pieces = Callable[[bytes], list[bytes]]  # request head -> the answer, as the separate writes that carry it


@dataclass
class PieceAppliance:
    """Answers every request on a connection with ``pieces(head)``, each piece its own write."""

    pieces: Pieces
    connections: int = 0
    heads: list[bytes] = field(default_factory=list)
    close_after_pieces: bool = False

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            for _ in range(20):  # bounded: no test sends more on one connection
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                for piece in self.pieces(head):
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0.002)  # one read on labgate's side per piece
                if self.close_after_pieces:
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def transport_to(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[Http1Transport]]]:
    servers: list[asyncio.Server] = []
    transports: list[Http1Transport] = []

    async def start(appliance: PieceAppliance, limit: int = 256) -> Http1Transport:
        server = await asyncio.start_server(appliance.serve, "127.0.0.1", 0)
        servers.append(server)
        url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        config = load_config(write_config(tmp_path, url, upstream={"timeouts": {"connect": 2, "read": 2}}))
        transport = Http1Transport(config.upstreams[0], limit=limit)
        transports.append(transport)
        return transport

    yield start
    for transport in transports:
        await transport.close()
    for server in servers:
        server.close()
        await server.wait_closed()


GET = OutboundRequest("GET", "/api/hosts", [("Accept", "application/json")], None)
ANSWER = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
    b"X-Site: \xe9t\xe9\r\nContent-Length: 17\r\n\r\n{\"hosts\": [1, 2]}"
)
PAIRS = [
    ("Content-Type", "application/json"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
    ("X-Site", b"\xe9t\xe9".decode("utf-8", "surrogateescape")), ("Content-Length", "17"),
]


async def exchange(transport: Http1Transport, request: OutboundRequest = GET) -> tuple[int, list[tuple[str, str]], bytes]:
    answer = await transport.send(request)
    try:
        return answer.status, answer.header_pairs, await answer.read()
    finally:
        answer.release()


async def test_an_answer_whole_in_one_write_gives_its_head_and_body_and_keeps_the_connection(transport_to) -> None:  # type: ignore[no-untyped-def]
    appliance = PieceAppliance(lambda head: [ANSWER])
    transport = await transport_to(appliance)
    for _ in range(3):
        assert await exchange(transport) == (200, PAIRS, b'{"hosts": [1, 2]}')
    assert appliance.connections == 1 and len(appliance.heads) == 3


async def test_an_answer_arriving_byte_by_byte_gives_the_same_answer_and_keeps_the_connection(transport_to) -> None:  # type: ignore[no-untyped-def]
    seen = 0

    def pieces(head: bytes) -> list[bytes]:
        nonlocal seen
        seen += 1
        return [ANSWER[i:i + 1] for i in range(len(ANSWER))] if seen == 1 else [ANSWER]

    appliance = PieceAppliance(pieces)
    transport = await transport_to(appliance)
    assert await exchange(transport) == (200, PAIRS, b'{"hosts": [1, 2]}')
    assert await exchange(transport) == (200, PAIRS, b'{"hosts": [1, 2]}')  # then whole, on the same connection
    assert appliance.connections == 1


async def test_a_chunked_answer_in_several_chunks_of_one_write_is_read_joined(transport_to) -> None:  # type: ignore[no-untyped-def]
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n1\r\nf\r\n0\r\n\r\n"
    appliance = PieceAppliance(lambda head: [chunked])
    transport = await transport_to(appliance)
    assert await exchange(transport) == (200, [("Transfer-Encoding", "chunked")], b"abcdef")
    assert await exchange(transport) == (200, [("Transfer-Encoding", "chunked")], b"abcdef")
    assert appliance.connections == 1


@pytest.mark.parametrize("status", [204, 304])
async def test_a_bodiless_status_reads_empty_and_keeps_the_connection(transport_to, status: int) -> None:  # type: ignore[no-untyped-def]
    appliance = PieceAppliance(lambda head: [b"HTTP/1.1 %d X\r\nETag: \"1\"\r\n\r\n" % status])
    transport = await transport_to(appliance)
    for _ in range(2):
        assert await exchange(transport) == (status, [("ETag", '"1"')], b"")
    assert appliance.connections == 1


async def test_a_head_answer_reads_empty_and_its_connection_is_not_kept(transport_to) -> None:  # type: ignore[no-untyped-def]
    appliance = PieceAppliance(lambda head: [b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n" + (b"" if head.startswith(b"HEAD") else b"full")])
    transport = await transport_to(appliance)
    assert await exchange(transport, OutboundRequest("HEAD", "/api/hosts", [], None)) == (200, [("Content-Length", "4")], b"")
    assert await exchange(transport) == (200, [("Content-Length", "4")], b"full")
    assert appliance.connections == 2


async def test_an_answer_released_unread_closes_its_connection(transport_to) -> None:  # type: ignore[no-untyped-def]
    appliance = PieceAppliance(lambda head: [ANSWER])
    transport = await transport_to(appliance)
    answer = await transport.send(GET)
    answer.release()  # the body is still on the connection: it cannot carry another exchange
    assert await exchange(transport) == (200, PAIRS, b'{"hosts": [1, 2]}')
    assert appliance.connections == 2


async def test_an_answer_cut_mid_body_is_an_upstream_error_and_its_connection_is_dropped(transport_to) -> None:  # type: ignore[no-untyped-def]
    cut = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhalf"
    appliance = PieceAppliance(lambda head: [cut] if len(appliance.heads) == 1 else [ANSWER], close_after_pieces=True)
    transport = await transport_to(appliance)
    answer = await transport.send(GET)
    try:
        with pytest.raises(UpstreamError) as failed:
            await answer.read()
    finally:
        answer.release()
    assert failed.value.reason.code == "upstream_unreachable"
    assert await exchange(transport) == (200, PAIRS, b'{"hosts": [1, 2]}')
    assert appliance.connections == 2


async def test_bytes_nobody_asked_for_end_the_connection(transport_to) -> None:  # type: ignore[no-untyped-def]
    appliance = PieceAppliance(lambda head: [ANSWER, b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"])
    transport = await transport_to(appliance)
    assert await exchange(transport) == (200, PAIRS, b'{"hosts": [1, 2]}')
    for _ in range(50):  # bounded: the unasked answer reaches labgate within a few milliseconds
        if not transport.idle or transport.idle[-1].closed:
            break
        await asyncio.sleep(0.01)
    assert await exchange(transport) == (200, PAIRS, b'{"hosts": [1, 2]}')
    assert appliance.connections == 2  # the first connection was not trusted again


SECOND = b"HTTP/1.1 200 OK\r\nX-Injected: 1\r\nContent-Length: 5\r\n\r\nextra"


@pytest.mark.parametrize("interim", [b"", b"HTTP/1.1 100 Continue\r\n\r\n"])
async def test_a_second_answer_in_the_same_read_never_joins_the_first_and_ends_the_connection(transport_to, interim) -> None:  # type: ignore[no-untyped-def]
    appliance = PieceAppliance(lambda head: [interim + ANSWER + SECOND])
    transport = await transport_to(appliance)
    status, pairs, body = await exchange(transport)
    assert (status, pairs, body) == (200, PAIRS, b'{"hosts": [1, 2]}')  # none of the second answer's headers or body
    assert not transport.idle or transport.idle[-1].closed  # the connection is not trusted again
    assert await exchange(transport) == (200, PAIRS, b'{"hosts": [1, 2]}')
    assert appliance.connections == 2


async def test_one_place_given_back_with_no_one_waiting_serves_the_next_exchange(transport_to) -> None:  # type: ignore[no-untyped-def]
    appliance = PieceAppliance(lambda head: [ANSWER])
    transport = await transport_to(appliance, limit=1)
    for _ in range(3):  # one place: each exchange frees it for the next
        assert (await exchange(transport))[0] == 200
    assert transport.slots.free == 1 and not transport.slots.waiters
    assert appliance.connections == 1


async def test_a_large_answer_is_read_from_the_appliance_only_as_fast_as_its_body_is_taken(transport_to) -> None:  # type: ignore[no-untyped-def]
    size, block = 32 * 1024 * 1024, b"L" * (1024 * 1024)  # far past labgate's buffer and the kernel's
    written: list[int] = []

    def pieces(head: bytes) -> list[bytes]:
        return [b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size, *([block] * (size // len(block)))]

    class Counting(PieceAppliance):
        async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            for piece in pieces(b""):
                writer.write(piece)
                await writer.drain()  # blocks while labgate does not read
                written.append(len(piece))
            writer.close()

    transport = await transport_to(Counting(pieces))
    answer = await transport.send(GET)
    try:
        await asyncio.sleep(0.3)  # ample time for 32 MiB on loopback, were labgate still reading
        assert sum(written) < size  # reading paused: the appliance's writes backed up
        received = 0
        async for chunk in answer.body():
            received += len(chunk)
        assert received == size
    finally:
        answer.release()


async def test_the_head_sent_is_the_request_line_the_host_every_header_but_the_client_s_framing_in_order_then_the_request_id(transport_to) -> None:  # type: ignore[no-untyped-def]
    import random

    rng = random.Random(5)
    appliance = PieceAppliance(lambda head: [ANSWER])
    transport = await transport_to(appliance)
    names = ["Accept", "X-Trace", "content-length", "Transfer-Encoding", "HOST", "X-Request-ID", "Cookie", "X-Caf\udce9"]
    for _ in range(40):
        headers = tuple((rng.choice(names), rng.choice(["1", "a b", "x\udce9"])) for _ in range(rng.randint(0, 5)))
        kept = "".join(f"{n}: {v}\r\n" for n, v in headers if n.lower() not in {"content-length", "transfer-encoding", "host"})
        # The same headers again with another request id: the head built the first time is reused, the id is each one's own.
        for request_id in (rng.choice([None, "r1"]), f"{rng.getrandbits(64):016x}"):
            await exchange(transport, OutboundRequest("GET", "/api/hosts?x=1", headers, None, request_id=request_id))
            host = appliance.heads[-1].split(b"\r\n")[1]
            assert host.startswith(b"Host: 127.0.0.1:")
            last = "" if request_id is None else f"X-Request-ID: {request_id}\r\n"
            expected = f"GET /api/hosts?x=1 HTTP/1.1\r\n{host.decode()}\r\n{kept}{last}\r\n".encode("utf-8", "surrogateescape")
            assert appliance.heads[-1] == expected


async def test_an_answer_that_never_comes_fails_after_the_read_timeout_and_the_sweep_stops_when_nothing_is_awaited(
    tmp_path: Path,
) -> None:
    done = asyncio.Event()

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1 << 16)  # reads the request, never answers
        await done.wait()
        writer.close()

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    transport = Http1Transport(load_config(write_config(tmp_path, url, upstream={"timeouts": {"connect": 2, "read": 0.4}})).upstreams[0])
    loop = asyncio.get_running_loop()

    async def timed(delay: float) -> tuple[float, str]:
        await asyncio.sleep(delay)
        started = loop.time()
        with pytest.raises(UpstreamError) as failed:
            await transport.send(GET)
        return loop.time() - started, failed.value.reason.code

    try:
        outcomes = await asyncio.gather(timed(0), timed(0.15))  # two deadlines, one sweep
        for waited, reason in outcomes:
            assert reason == "upstream_timeout"
            assert 0.4 <= waited < 0.4 + 0.05 + 0.3  # never early; late by at most one sweep (0.05 s here) and slack
        await asyncio.sleep(0.12)  # the sweep that found them expired looks once more, finds none, and stops
        assert transport._awaited == {} and transport._sweeping is None
    finally:
        done.set()
        await transport.close()
        server.close()
        await server.wait_closed()
        await asyncio.sleep(0.05)  # the appliance's handlers close their ends


async def test_releasing_an_answer_twice_gives_its_pool_place_back_once(transport_to) -> None:  # type: ignore[no-untyped-def]
    appliance = PieceAppliance(lambda head: [ANSWER])
    transport = await transport_to(appliance, limit=2)
    answer = await transport.send(GET)
    assert await answer.read() == b'{"hosts": [1, 2]}'
    answer.release()
    answer.release()
    assert transport.slots.free == 2 and len(transport.idle) == 1  # not 3 places, not the connection twice
