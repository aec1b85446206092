"""A client's faults are the client's: never logged or counted as the appliance failing.

Shipped alerts fire on ``upstream_*`` reasons and ``labgate_upstream_errors_total``;
a client that aborts its upload, hangs up mid-answer or stalls its body must move
neither.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import aiohttp
import pytest

from tests.conftest import GatewayStarter, RecordingUpstream, mint


def decision_reasons(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [json.loads(r.getMessage())["reason"] for r in caplog.records if r.name == "labgate.decisions"]


async def logged(caplog: pytest.LogCaptureFixture, count: int = 1) -> list[str]:
    """The decision lines once ``count`` are in (the handler may finish after the client left)."""
    for _ in range(100):
        reasons = decision_reasons(caplog)
        if len(reasons) >= count:
            return reasons
        await asyncio.sleep(0.05)
    return decision_reasons(caplog)


async def metrics(url: str) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/metrics") as response:
            return await response.text()


def assert_no_upstream_error(exposition: str) -> None:
    lines = [line for line in exposition.splitlines() if line.startswith("labgate_upstream_errors_total{")]
    assert lines == [], lines


async def test_an_aborted_upload_is_the_clients(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await start_gateway(upstream.url)
    caplog.set_level(logging.INFO, logger="labgate.decisions")
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(
        f"PUT /demo/api/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {mint()}\r\n"
        "Content-Length: 1000000\r\n\r\n".encode() + b"x" * 100_000
    )
    await writer.drain()
    await asyncio.sleep(0.2)
    writer.transport.abort()  # gone, 900 KB short
    assert await logged(caplog) == ["client_aborted"]
    exposition = await metrics(gateway.url)
    assert_no_upstream_error(exposition)
    assert 'reason="client_aborted"' in exposition


async def test_a_client_hanging_up_mid_answer_is_the_clients(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, caplog: pytest.LogCaptureFixture
) -> None:
    upstream.download_size = 64 * 1024 * 1024  # streamed, far more than any socket buffer
    gateway = await start_gateway(upstream.url)
    caplog.set_level(logging.INFO, logger="labgate.decisions")
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(f"GET /demo/api/download HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {mint()}\r\n\r\n".encode())
    await writer.drain()
    assert (await reader.readline()).startswith(b"HTTP/1.1 200")
    await reader.readexactly(4096)
    writer.transport.abort()
    assert await logged(caplog) == ["client_aborted"]
    assert_no_upstream_error(await metrics(gateway.url))


async def test_a_stalled_body_is_408_and_not_an_appliance_timeout(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, caplog: pytest.LogCaptureFixture
) -> None:
    limits: dict[str, Any] = {"max_body_bytes": 1 << 30, "header_timeout": 2, "body_timeout": 0.5}
    gateway = await start_gateway(upstream.url, limits=limits)
    caplog.set_level(logging.INFO, logger="labgate.decisions")
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(
            f"PUT /demo/api/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {mint()}\r\n"
            "Content-Length: 1000\r\n\r\nonly-a-little".encode()
        )
        await writer.drain()
        async with asyncio.timeout(10):
            status_line = await reader.readline()
            answer = await reader.read(4096)
    finally:
        writer.close()
    assert status_line.startswith(b"HTTP/1.1 408"), status_line
    assert b'"reason": "body_timeout"' in answer
    assert await logged(caplog) == ["body_timeout"]
    assert_no_upstream_error(await metrics(gateway.url))
