"""Only a forwarded request is a use of its token, on every store.

A stolen token held outside the type's IP allowlist, or sent on routes its type
does not allow, must not keep itself alive by being refused: idle lifetimes,
last-use records and live-token counts move only for requests that reached the
appliance.  The pack here gives its type a 4-second idle lifetime so the test
can watch it run out.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import GatewayStarter, RecordingUpstream, mint
from tests.redis_server import RedisServer

IDLE_PACK = """
pack: idle
token_types:
  reader:
    routes: [GET /api/hosts]
    query: {allow: []}
    lifetimes: {idle: 4s, absolute: 1h}
  admin:
    routes: [GET /api/hosts]
  office:
    routes: [GET /api/hosts]
  session:
    routes: [GET /api/hosts]
"""
IDLE = 4.0


def store_settings(kind: str, tmp_path: Path, redis_server: RedisServer | None) -> dict[str, Any]:
    if kind == "memory":
        return {"type": "memory"}
    if kind == "sqlite":
        return {"type": "sqlite", "path": str(tmp_path / "state.sqlite3")}
    assert redis_server is not None
    return {"type": "redis", "url": redis_server.url, "prefix": f"use-{uuid.uuid4().hex}:"}


async def status_of(url: str, token: str, path: str = "/api/hosts", **headers: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/demo{path}", headers={"Authorization": f"Bearer {token}", **headers}) as response:
            return response.status, (await response.json(content_type=None)).get("reason", "allowed")


async def until(moment: float) -> None:
    await asyncio.sleep(max(0.0, moment - time.time()))


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def idle_gateway(
    request: pytest.FixtureRequest, upstream: RecordingUpstream, start_http1_gateway: GatewayStarter, tmp_path: Path
) -> Any:
    redis_server = request.getfixturevalue("redis_server") if request.param == "redis" else None
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "idle.yaml").write_text(IDLE_PACK)
    return await start_http1_gateway(
        upstream.url, upstream={"pack": "idle"}, store=store_settings(request.param, tmp_path, redis_server)
    )


async def test_refused_requests_do_not_keep_a_token_alive(idle_gateway: Any, upstream: RecordingUpstream) -> None:
    token = mint()
    issued = time.time()
    await until(issued + IDLE / 2)
    for path in ("/api/backups", "/api/hosts?sort=name", "/api/admin"):  # refused: not uses
        assert (await status_of(idle_gateway.url, token, path))[0] == 403
    await until(issued + IDLE + 1)
    assert await status_of(idle_gateway.url, token) == (401, "idle_expired")
    assert upstream.received == []


async def test_a_forwarded_request_keeps_a_token_alive(idle_gateway: Any, upstream: RecordingUpstream) -> None:
    token = mint()
    issued = time.time()
    await until(issued + IDLE / 2)
    assert await status_of(idle_gateway.url, token) == (200, "allowed")  # a use
    await until(issued + IDLE + 1)
    assert await status_of(idle_gateway.url, token) == (200, "allowed")  # within IDLE of that use
    assert len(upstream.received) == 2


async def test_a_request_that_never_reached_the_appliance_is_not_a_use(
    upstream: RecordingUpstream, start_http1_gateway: GatewayStarter, tmp_path: Path
) -> None:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "idle.yaml").write_text(IDLE_PACK)
    gateway = await start_http1_gateway("http://127.0.0.1:9", upstream={"pack": "idle"})  # nothing listens there
    token = mint()
    issued = time.time()
    await until(issued + IDLE / 2)
    assert await status_of(gateway.url, token) == (502, "upstream_unreachable")
    await until(issued + IDLE + 1)
    assert await status_of(gateway.url, token) == (401, "idle_expired")
