"""Appliances that hang, refuse or half-close, and clients that send slowly: what labgate answers, and when.

labgate sends a decided request once: a timeout is never retried, and a
request that met a connection closing before any answer byte is re-sent only
on a reused keep-alive connection and only for a bodiless idempotent method.
Every upstream here is a fresh connection, so each request reaches it once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from tests.conftest import RecordingUpstream, free_port, mint, raw_request, write_config
from tests.faults.load import ask, session
from tests.labgate_process import labgate_serving

READ_TIMEOUT = 1.0
HEADER_TIMEOUT = 1.0
BODY_TIMEOUT = 1.0
MARGIN = 1.0  # what a loaded two-core machine may add to a timeout before an answer is sent


class RawAppliance:
    """An appliance on loopback that reads each request's head and then misbehaves as told."""

    def __init__(self, behaviour: str) -> None:
        self.behaviour = behaviour  # "hang" or "half_close"
        self.requests: list[bytes] = []
        self._writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        self.requests.append(head.split(b"\r\n", 1)[0])
        if self.behaviour == "half_close":
            writer.write_eof()  # "I am done sending" before any answer byte
            await writer.drain()
            return
        await asyncio.sleep(3600)  # hang: the connection stays open, nothing is ever answered

    def close(self) -> None:
        for writer in self._writers:
            writer.close()


@asynccontextmanager
async def raw_appliance(behaviour: str) -> AsyncIterator[tuple[RawAppliance, str]]:
    appliance = RawAppliance(behaviour)
    port = free_port()
    server = await asyncio.start_server(appliance.handle, "127.0.0.1", port)
    try:
        yield appliance, f"http://127.0.0.1:{port}"
    finally:
        appliance.close()
        server.close()


def appliance_config(tmp_path: Path, url: str) -> Path:
    return write_config(
        tmp_path, url, upstream={"timeouts": {"connect": 1, "read": READ_TIMEOUT}}, store={"type": "memory"},
        limits={"header_timeout": HEADER_TIMEOUT, "body_timeout": BODY_TIMEOUT}, decision_log="denials",
    )


@pytest.mark.parametrize(
    "behaviour, expected",
    [("hang", (504, "upstream_timeout")), ("half_close", (502, "upstream_unreachable"))],
    ids=["hanging", "half_closing"],
)
async def test_a_misbehaving_appliance_gets_each_request_once_and_the_client_an_answer_in_time(
    tmp_path: Path, behaviour: str, expected: tuple[int, str]
) -> None:
    async with raw_appliance(behaviour) as (appliance, url):
        async with labgate_serving(appliance_config(tmp_path, url)) as (gateway, _):
            async with session() as client:
                answers = [await ask(client, f"{gateway}/demo/api/hosts", mint()) for _ in range(3)]
            restore = await raw_request(
                int(gateway.rsplit(":", 1)[1]),
                f"POST /demo/api/backups/b1/restore HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {mint()}\r\n"
                "Content-Type: application/json\r\nContent-Length: 2\r\n\r\n",
                b"{}",
            )
    assert [(a.status, a.reason) for a in answers] == [expected] * 3
    assert (restore.status, restore.json()["reason"]) == expected
    assert appliance.requests == [b"GET /api/hosts HTTP/1.1"] * 3 + [b"POST /api/backups/b1/restore HTTP/1.1"]
    assert max(a.seconds for a in answers) <= READ_TIMEOUT + MARGIN


async def test_a_refusing_appliance_is_502_at_once(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens
    async with labgate_serving(appliance_config(tmp_path, closed)) as (gateway, _):
        async with session() as client:
            answers = [await ask(client, f"{gateway}/demo/api/hosts", mint()) for _ in range(3)]
    assert [(a.status, a.reason) for a in answers] == [(502, "upstream_unreachable")] * 3
    assert max(a.seconds for a in answers) <= MARGIN


async def test_slow_clients_are_cut_at_their_deadlines_and_others_are_served_meanwhile(
    upstream: RecordingUpstream, tmp_path: Path
) -> None:
    async with labgate_serving(appliance_config(tmp_path, upstream.url)) as (gateway, _):
        port = int(gateway.rsplit(":", 1)[1])
        slowloris = asyncio.create_task(trickle(port, b"GET /demo/api/hosts HTTP/1.1\r\nHost: x\r\nX-Slow: ", b"a" * 60))
        head = (
            f"PUT /demo/api/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {mint()}\r\n"
            "Content-Length: 1000\r\n\r\n"
        ).encode()
        # body_timeout bounds each read: a body stalling longer than that between two pieces is cut.
        slow_body = asyncio.create_task(trickle(port, head, b"b" * 20, every=BODY_TIMEOUT + 0.5))
        async with session() as client:
            meanwhile = [await ask(client, f"{gateway}/demo/api/hosts", mint()) for _ in range(5)]
        slowloris_closed, slow_body_answer = await asyncio.gather(slowloris, slow_body)
    assert [a.status for a in meanwhile] == [200] * 5 and max(a.seconds for a in meanwhile) < HEADER_TIMEOUT
    assert slowloris_closed[0] == b"" and slowloris_closed[1] <= HEADER_TIMEOUT + MARGIN
    answer, took = slow_body_answer
    assert b'"reason": "body_timeout"' in answer, answer[:400]  # the client's fault, not the appliance's
    assert took <= 2 * (BODY_TIMEOUT + 0.5) + MARGIN
    assert not any(r.raw_path == "/api/upload" and r.body_size == 1000 for r in upstream.received)


async def trickle(port: int, head: bytes, drip: bytes, *, every: float = 0.5) -> tuple[bytes, float]:
    """Send ``head``, then ``drip`` a byte ``every`` s until labgate answers or closes; what came back and when."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    started = time.monotonic()
    try:
        writer.write(head)
        await writer.drain()
        for byte in drip:  # bounded by len(drip)
            try:
                answer = await asyncio.wait_for(reader.read(65536), every)
                return answer, time.monotonic() - started
            except TimeoutError:
                pass
            except ConnectionResetError:  # closed with a reset rather than a FIN: cut all the same
                return b"", time.monotonic() - started
            try:
                writer.write(bytes([byte]))
                await writer.drain()
            except ConnectionError:
                return b"", time.monotonic() - started
        raise AssertionError("labgate never cut the slow client")
    finally:
        writer.close()
