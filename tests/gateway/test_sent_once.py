"""A request reaches the appliance at most once, unless resending it is provably safe.

Appliances here are raw asyncio servers that hang, half-close or reset after
reading a request, so the test counts exactly how often each request arrived
and how long the client waited.  ``write_config`` gives the upstream a 2 s
read timeout.
"""

from __future__ import annotations

import asyncio
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest

from tests.conftest import GatewayStarter, mint

READ_TIMEOUT = 2.0
Behaviour = Callable[[int, asyncio.StreamWriter], Awaitable[bool]]  # (request index on the connection, writer) -> keep going


@dataclass
class CountingAppliance:
    """Reads each request head (and its Content-Length body), counts it, then does what ``behaviour`` says."""

    behaviour: Behaviour
    heads: list[bytes] = field(default_factory=list)
    url: str = ""
    writers: list[asyncio.StreamWriter] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        index = 0
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                for line in head.lower().split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        await reader.readexactly(int(line.split(b":")[1]))
                self.heads.append(head.split(b"\r\n", 1)[0])
                if not await self.behaviour(index, writer):
                    return
                index += 1
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            if not writer.is_closing():
                writer.close()


def answer_ok(writer: asyncio.StreamWriter) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: application/json\r\n\r\n{}")


def hang(appliance: CountingAppliance) -> Behaviour:
    """Answers the first request on a connection (so it is kept alive and reused); then answers nothing."""
    async def behaviour(index: int, writer: asyncio.StreamWriter) -> bool:
        if index == 0:
            answer_ok(writer)
            await writer.drain()
            return True
        await appliance.release.wait()  # until the test is over
        return False
    return behaviour


async def half_close(index: int, writer: asyncio.StreamWriter) -> bool:
    writer.write_eof()  # FIN: no answer will ever come
    await asyncio.sleep(0.2)
    return False


async def reset(index: int, writer: asyncio.StreamWriter) -> bool:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # close sends RST
    writer.transport.abort()
    return False


async def answer_then_drop(index: int, writer: asyncio.StreamWriter) -> bool:
    """Answers the first request on a connection and keeps it alive; the next one it reads and drops."""
    if index == 0:
        answer_ok(writer)
        await writer.drain()
        return True
    writer.transport.abort()
    return False


@pytest.fixture
async def counting() -> AsyncIterator[Callable[[Behaviour | None], Awaitable[CountingAppliance]]]:
    servers: list[tuple[asyncio.Server, CountingAppliance]] = []

    async def start(behaviour: Behaviour | None) -> CountingAppliance:
        appliance = CountingAppliance(behaviour or half_close)
        if behaviour is None:
            appliance.behaviour = hang(appliance)
        server = await asyncio.start_server(appliance.serve, "127.0.0.1", 0)
        appliance.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
        servers.append((server, appliance))
        return appliance

    yield start
    for server, appliance in servers:
        appliance.release.set()
        server.close()
        for writer in appliance.writers:
            writer.close()
        await server.wait_closed()


REQUESTS = [
    ("GET", "/api/hosts"),
    ("DELETE", "/api/hosts/h1"),
    ("POST", "/api/backups/b1/restore"),
]


async def call(url: str, method: str, path: str, session: aiohttp.ClientSession | None = None) -> tuple[int, str, float]:
    started = time.monotonic()
    own = session is None
    session = session or aiohttp.ClientSession()
    try:
        async with session.request(method, f"{url}/demo{path}", headers={"Authorization": f"Bearer {mint({'role': 'admin'})}"}) as response:
            body = await response.json(content_type=None)
    finally:
        if own:
            await session.close()
    return response.status, body.get("reason", ""), time.monotonic() - started


@pytest.mark.parametrize("method, path", REQUESTS, ids=[m for m, _ in REQUESTS])
async def test_a_hanging_appliance_gets_the_request_once_and_the_client_waits_one_timeout(
    start_gateway: GatewayStarter, counting: Callable[[Behaviour | None], Awaitable[CountingAppliance]], method: str, path: str
) -> None:
    appliance = await counting(None)
    gateway = await start_gateway(appliance.url)
    async with aiohttp.ClientSession() as session:
        assert (await call(gateway.url, "GET", "/api/hosts", session))[0] == 200  # a kept-alive connection
        status, reason, waited = await call(gateway.url, method, path, session)  # reuses it, then hangs
    assert (status, reason) == (504, "upstream_timeout")
    # A timeout is never taken for a stale connection: the appliance may be working on it.
    assert len(appliance.heads) == 2, appliance.heads
    assert READ_TIMEOUT * 0.9 <= waited < READ_TIMEOUT * 1.75  # one read timeout, never two


@pytest.mark.parametrize("behaviour", [half_close, reset], ids=["half_closing", "resetting"])
@pytest.mark.parametrize("method, path", REQUESTS, ids=[m for m, _ in REQUESTS])
async def test_an_appliance_that_drops_a_fresh_connection_gets_the_request_once(
    start_gateway: GatewayStarter,
    counting: Callable[[Behaviour | None], Awaitable[CountingAppliance]],
    behaviour: Behaviour,
    method: str,
    path: str,
) -> None:
    appliance = await counting(behaviour)
    gateway = await start_gateway(appliance.url)
    status, reason, _ = await call(gateway.url, method, path)
    assert (status, reason) == (502, "upstream_unreachable")
    assert len(appliance.heads) == 1, appliance.heads


async def test_on_a_stale_keep_alive_connection_only_a_bodiless_idempotent_request_is_sent_again(
    start_http1_gateway: GatewayStarter, counting: Callable[[Behaviour | None], Awaitable[CountingAppliance]]
) -> None:
    appliance = await counting(answer_then_drop)
    gateway = await start_http1_gateway(appliance.url)
    async with aiohttp.ClientSession() as session:
        assert (await call(gateway.url, "GET", "/api/hosts", session))[0] == 200  # opens the kept-alive connection
        # POST on the reused connection: dropped before any answer byte; never sent again.
        assert (await call(gateway.url, "POST", "/api/backups/b1/restore", session))[:2] == (502, "upstream_unreachable")
        assert (await call(gateway.url, "GET", "/api/hosts", session))[0] == 200  # a fresh connection
        # GET on the reused connection: dropped, so sent once more on a fresh one.
        assert (await call(gateway.url, "GET", "/api/hosts", session))[0] == 200
    assert appliance.heads == [
        b"GET /api/hosts HTTP/1.1",
        b"POST /api/backups/b1/restore HTTP/1.1",
        b"GET /api/hosts HTTP/1.1",
        b"GET /api/hosts HTTP/1.1",
        b"GET /api/hosts HTTP/1.1",
    ]


async def test_the_aiohttp_transport_never_sends_again(
    start_http1_gateway: GatewayStarter, counting: Callable[[Behaviour | None], Awaitable[CountingAppliance]]
) -> None:
    """aiohttp's client resends idempotent requests on its own; labgate switches that off."""
    appliance = await counting(answer_then_drop)
    gateway = await start_http1_gateway(appliance.url, upstream={"transport": "aiohttp"})
    async with aiohttp.ClientSession() as session:
        assert (await call(gateway.url, "GET", "/api/hosts", session))[0] == 200
        await asyncio.sleep(0.05)
        assert (await call(gateway.url, "DELETE", "/api/hosts/h1", session))[:2] == (502, "upstream_unreachable")
    assert appliance.heads == [b"GET /api/hosts HTTP/1.1", b"DELETE /api/hosts/h1 HTTP/1.1"]
