"""Bounds on what an unauthenticated client holds: the whole request head, and the number of connections.

aiohttp bounds each header line (``limits.max_header_bytes``) and the number of
lines; ``limits.max_header_block_bytes`` bounds their sum, counted while the head
arrives and checked again once it is complete.  ``limits.max_connections`` caps
open connections.  Every refusal is JSON, and nothing reaches the appliance.
"""

from __future__ import annotations

import asyncio
import json
import logging
import select
import socket
from pathlib import Path

import pytest

from tests.conftest import (
    GatewayStarter,
    RecordingUpstream,
    mint,
    raw_request,
    write_config,
)
from tests.labgate_process import labgate_serving

LIMITS = {"max_body_bytes": 1 << 20, "header_timeout": 5}


def head_lines(total: int, line: int = 4000) -> list[str]:
    """Header lines of ``line`` bytes each (under the per-line limit) adding up to at least ``total`` bytes."""
    count = -(-total // line)
    return [f"X-Filler-{i:03d}: {'a' * (line - 16)}\r\n" for i in range(count)]


def request_start(path: str = "/demo/api/hosts", method: str = "GET") -> str:
    return f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {mint()}\r\n"


class Client:
    """A raw client that stops sending once the server has answered, then reads what was answered.

    A server refusing a head mid-way closes while the client may still be sending;
    reading stays possible on the socket (stream wrappers would report only the broken pipe).
    """

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buffer = b""

    @classmethod
    async def connect(cls, port: int) -> Client:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        return cls(sock)

    async def send_in_pieces(self, pieces: list[str | bytes]) -> int:
        """Write each piece on its own (the server reads them apart); returns how many went before an answer came."""
        loop = asyncio.get_running_loop()
        for sent, piece in enumerate(pieces):
            if select.select([self.sock], [], [], 0)[0]:
                return sent  # the server answered (or closed): stop sending
            try:
                await loop.sock_sendall(self.sock, piece if isinstance(piece, bytes) else piece.encode("latin-1"))
            except ConnectionError:
                return sent
            await asyncio.sleep(0.003)
        return len(pieces)

    async def _more(self) -> bytes:
        try:
            chunk = await asyncio.get_running_loop().sock_recv(self.sock, 1 << 16)
        except ConnectionError:
            chunk = b""
        self.buffer += chunk
        return chunk

    async def read_response(self) -> tuple[int, dict[str, str], bytes]:
        """One response: status, headers (lower-cased names), body."""
        async with asyncio.timeout(5):
            while b"\r\n\r\n" not in self.buffer:
                assert await self._more(), f"the connection closed without a complete answer: {self.buffer[:200]!r}"
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {n.strip().lower(): v.strip() for n, _, v in (line.partition(":") for line in lines)}
            length = int(headers.get("content-length", "0"))
            while len(self.buffer) < length:
                assert await self._more(), "the connection closed in the middle of a body"
            body, self.buffer = self.buffer[:length], self.buffer[length:]
        return int(status_line.split()[1]), headers, body

    async def rest(self) -> bytes:
        """Everything until the server closes."""
        async with asyncio.timeout(5):
            while await self._more():
                pass
        rest, self.buffer = self.buffer, b""
        return rest

    def close(self) -> None:
        self.sock.close()


def assert_refused(status: int, body: bytes, expected_status: int, reason: str) -> None:
    assert status == expected_status
    document = json.loads(body)
    assert document["reason"] == reason
    assert set(document) >= {"error", "error_description", "reason", "request_id"}


async def test_a_head_growing_past_the_block_limit_line_by_line_is_refused_before_it_ends(
    start_gateway: GatewayStarter, upstream: RecordingUpstream
) -> None:
    """Lines of 4 KB each pass the per-line limit; their sum passes 64 KiB; the head never completes."""
    gateway = await start_gateway(upstream.url, limits=LIMITS)
    client = await Client.connect(gateway.port)
    try:
        # 96 KiB of header lines and no blank line: only the running count can answer.
        sent = await client.send_in_pieces([request_start(), *head_lines(96 * 1024)])
        status, headers, body = await client.read_response()
        assert_refused(status, body, 431, "headers_too_large")
        assert headers["connection"].lower() == "close"
        assert await client.rest() == b""  # and the connection is closed
    finally:
        client.close()
    assert 16 < sent < 25  # answered once a little over 64 KiB had arrived
    assert upstream.received == []


async def test_a_complete_head_of_one_megabyte_is_never_forwarded(
    start_gateway: GatewayStarter, upstream: RecordingUpstream
) -> None:
    gateway = await start_gateway(upstream.url, limits=LIMITS)
    head = request_start() + "".join(head_lines(1 << 20, line=15000)) + "\r\n"
    assert len(head) > 1 << 20 and head.count("\r\n") < 100  # within aiohttp's per-line and line-count limits
    client = await Client.connect(gateway.port)
    try:
        await client.send_in_pieces([head[i : i + (1 << 18)] for i in range(0, len(head), 1 << 18)])
        status, _, body = await client.read_response()
    finally:
        client.close()
    assert_refused(status, body, 431, "headers_too_large")
    assert upstream.received == []


async def test_a_complete_head_over_the_limit_in_one_read_is_refused_by_the_gateway(
    start_gateway: GatewayStarter, upstream: RecordingUpstream
) -> None:
    """A small limit and a 12 KB head sent in one write: the head completes in one read, so the check is the gateway's."""
    gateway = await start_gateway(upstream.url, limits={**LIMITS, "max_header_block_bytes": 8192})
    head = request_start() + "".join(head_lines(12 * 1024)) + "\r\n"
    response = await raw_request(gateway.port, head)
    assert_refused(response.status, response.body, 431, "headers_too_large")
    assert upstream.received == []


async def test_a_head_just_under_the_limit_is_served(start_gateway: GatewayStarter, upstream: RecordingUpstream) -> None:
    gateway = await start_gateway(upstream.url, limits=LIMITS)
    start = request_start()
    lines = head_lines(60 * 1024)
    assert 62 * 1024 < len(start + "".join(lines) + "\r\n") < 65536
    client = await Client.connect(gateway.port)
    try:
        # In pieces, so both the running count and the gateway's check see it; and again in one write.
        await client.send_in_pieces([start, *lines, "\r\n"])
        first, _, _ = await client.read_response()
        await client.send_in_pieces([start + "".join(lines) + "\r\n"])
        second, _, _ = await client.read_response()
    finally:
        client.close()
    assert (first, second) == (200, 200)
    assert [r.raw_path for r in upstream.received] == ["/api/hosts", "/api/hosts"]
    assert len(upstream.received[0].headers["x-filler-000"][0]) == 4000 - 16


async def test_the_count_starts_again_for_each_request_and_never_counts_a_body(
    start_gateway: GatewayStarter, upstream: RecordingUpstream
) -> None:
    """On one keep-alive connection: a 200 KB body in pieces is not head; a second 40 KB head passes; a third too big is refused."""
    gateway = await start_gateway(upstream.url, limits=LIMITS)
    body = b"b" * (200 * 1024)
    client = await Client.connect(gateway.port)
    try:
        head = f"{request_start('/demo/api/upload', 'PUT')}Content-Length: {len(body)}\r\n\r\n"
        await client.send_in_pieces([head, *(body[i : i + 8192] for i in range(0, len(body), 8192))])
        first, _, _ = await client.read_response()
        await client.send_in_pieces([request_start(), *head_lines(40 * 1024), "\r\n"])
        second, _, _ = await client.read_response()
        await client.send_in_pieces([request_start(), *head_lines(80 * 1024)])
        third, _, third_body = await client.read_response()
    finally:
        client.close()
    assert (first, second) == (200, 200)
    assert_refused(third, third_body, 431, "headers_too_large")
    assert [(r.method, r.raw_path, r.body_size) for r in upstream.received] == [
        ("PUT", "/api/upload", len(body)),
        ("GET", "/api/hosts", 0),
    ]


async def test_a_head_too_large_behind_a_request_in_flight_never_answers_for_that_request(
    start_gateway: GatewayStarter, upstream: RecordingUpstream
) -> None:
    """Pipelined: the first request's answer is its own; the oversized second head gets no other answer in its place."""
    upstream.slow_seconds = 0.5
    gateway = await start_gateway(upstream.url, limits=LIMITS)
    client = await Client.connect(gateway.port)
    try:
        await client.send_in_pieces([request_start("/demo/api/slow") + "\r\n", request_start(), *head_lines(96 * 1024)])
        status, _, body = await client.read_response()
        rest = await client.rest()
    finally:
        client.close()
    assert status == 200 and json.loads(body)["path"] == "/api/slow"
    assert rest == b"" or rest.startswith(b"HTTP/1.1 431")
    assert [r.raw_path for r in upstream.received] == ["/api/slow"]


async def test_connections_past_the_cap_get_503_until_others_close(
    start_gateway: GatewayStarter, upstream: RecordingUpstream, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await start_gateway(upstream.url, limits={**LIMITS, "max_connections": 3})
    held = [await Client.connect(gateway.port) for _ in range(3)]
    try:
        # The cap is reached once the server has registered them: one served request on each proves it.
        for client in held:
            await client.send_in_pieces([f"{request_start()}\r\n"])
            status, _, _ = await client.read_response()
            assert status == 200
        with caplog.at_level(logging.WARNING, logger="labgate"):
            for _ in range(4):
                response = await raw_request(gateway.port, f"{request_start()}\r\n")
                assert_refused(response.status, response.body, 503, "too_many_connections")
                assert response.headers["connection"].lower() == "close"
        assert len(upstream.received) == 3
        # A flood of refusals is one warning per interval, not one per connection.
        assert [r.getMessage() for r in caplog.records if "max_connections" in r.getMessage()] == [
            "refused 1 connection(s) past limits.max_connections (3 open)"
        ]
    finally:
        for client in held:
            client.close()
    for _ in range(50):  # the server notices the closes within moments
        response = await raw_request(gateway.port, f"{request_start()}\r\n")
        if response.status == 200:
            break
        await asyncio.sleep(0.05)
    assert response.status == 200
    assert len(upstream.received) == 4


@pytest.mark.parametrize("value", [1024, "many"])
def test_limits_below_their_minimum_are_refused_at_their_line(tmp_path, value: object) -> None:  # type: ignore[no-untyped-def]
    from proxy.config import ConfigError, load_config
    from tests.conftest import write_config

    path = write_config(tmp_path, "http://127.0.0.1:1", limits={"max_header_block_bytes": value})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert "max_header_block_bytes" in str(caught.value)


# The documented bound on what clients that never finish a head hold: per connection,
# the head so far plus one socket read.  Slack covers allocator and interpreter noise.
HELD = 200
HEAD_PER_CONNECTION = 60 * 1024
GROWTH_BOUND_MIB = HELD * (64 * 1024) * 2 / 2**20 + 40


def memory_mib(pid: int, field: str) -> float:
    """A /proc/PID/status memory figure: VmRSS now, VmHWM the peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc status")


async def test_many_slow_clients_holding_big_heads_stay_within_the_memory_bound(
    tmp_path: Path, upstream: RecordingUpstream
) -> None:
    """200 connections each send ~60 KB of header lines and hold; labgate grows within its bound and still serves.

    Then each pushes on towards 256 KB: every one is refused past 64 KiB, and the
    peak stays within the same bound (without the block limit it would be ~4x).
    """
    config = write_config(tmp_path, upstream.url, decision_log="off", limits={**LIMITS, "header_timeout": 60})
    async with labgate_serving(config) as (url, process):
        port = int(url.rsplit(":", 1)[1])
        assert (await raw_request(port, f"{request_start()}\r\n")).status == 200  # warm: first request's imports done
        before = memory_mib(process.pid, "VmRSS")
        clients = [await Client.connect(port) for _ in range(HELD)]
        try:
            pieces = [request_start(), *head_lines(HEAD_PER_CONNECTION - 400)]
            sent = await asyncio.gather(*(client.send_in_pieces(pieces) for client in clients))
            assert sent == [len(pieces)] * HELD  # nobody was answered: every head is under the limit, and held
            health = await raw_request(port, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            held = memory_mib(process.pid, "VmRSS")
            assert not any(select.select([c.sock for c in clients], [], [], 0)[0])  # still held, unanswered
            more = head_lines(196 * 1024)
            pushed = await asyncio.gather(*(client.send_in_pieces(more) for client in clients))
            answers = await asyncio.gather(*(client.read_response() for client in clients))
            peak = memory_mib(process.pid, "VmHWM")
        finally:
            for client in clients:
                client.close()
    print(
        f"RSS {before:.1f} MiB; {HELD} held heads of {HEAD_PER_CONNECTION // 1024} KiB: {held:.1f} MiB "
        f"(+{held - before:.1f}); peak after pushing past the limit: {peak:.1f} MiB (+{peak - before:.1f})"
    )
    assert health.status == 200
    assert held - before < GROWTH_BOUND_MIB
    assert all(n < len(more) for n in pushed)
    assert {(status, json.loads(body)["reason"]) for status, _, body in answers} == {(431, "headers_too_large")}
    assert peak - before < GROWTH_BOUND_MIB
    assert len(upstream.received) == 1  # the warm-up request only


@pytest.mark.parametrize("limits", [{}, {"max_header_block_bytes": 40000, "max_header_bytes": 4096, "max_line_bytes": 2048}])
def test_a_head_with_no_more_headers_than_always_fit_is_within_the_block_limit_whatever_they_hold(
    tmp_path: Path, limits: dict[str, int]
) -> None:
    """The gateway sums a head only past that many headers: the largest head aiohttp lets through below it fits."""
    from aiohttp.test_utils import make_mocked_request

    from proxy.config import load_config
    from proxy.gateway.app import Gateway, _head_size

    config = load_config(write_config(tmp_path, "http://127.0.0.1:9", limits=limits))
    fit, bounds = Gateway(config)._headers_always_fit, config.limits
    assert fit >= 1
    path = "/" + "p" * (bounds.max_line_bytes - 1)  # the longest target aiohttp accepts
    name = "X-" + "n" * 30
    value = "v" * (bounds.max_header_bytes - len(name))  # name and value together at aiohttp's bound
    largest = make_mocked_request("OPTIONS", path, headers=[(name, value)] * fit)
    assert _head_size(largest, largest.raw_headers) <= bounds.max_header_block_bytes
    one_more = make_mocked_request("OPTIONS", path, headers=[(name, value)] * (fit + 2))
    assert _head_size(one_more, one_more.raw_headers) > bounds.max_header_block_bytes  # so past it, heads are summed
