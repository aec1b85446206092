"""Lifetimes through a running gateway: expired tokens never reach the appliance; no store, no pass."""

from __future__ import annotations

import time
import uuid

import aiohttp
import pytest

from proxy.store.sqlite import SqliteStore
from proxy.token_facts import token_fingerprint
from tests.conftest import GatewayStarter, RecordingUpstream, mint
from tests.gateway.uses import use_written_since
from tests.redis_server import RedisServer


async def call(url: str, token: str) -> tuple[int, dict[str, str], dict[str, object]]:
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
            return response.status, dict(response.headers), await response.json(content_type=None)


@pytest.mark.parametrize(
    "issued_ago, reason",
    # A JWT still valid 25 h after its iat claims a longer life than the type's 24 h absolute
    # lifetime allows: refused as such outright (absolute_expired is for tokens without exp).
    [(25 * 3600, "lifetime_too_long"), (2 * 3600, "ttl_expired"), (11 * 60, "idle_expired")],
)
async def test_expired_lifetimes_are_401_and_never_forwarded(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, issued_ago: int, reason: str
) -> None:
    gateway = await start_gateway(upstream.url)
    token = mint({"role": "session", "iat": int(time.time()) - issued_ago}, lifetime=300)
    status, headers, body = await call(f"{gateway.url}/demo/api/hosts", token)
    assert (status, body["reason"]) == (401, reason)
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]
    assert upstream.received == []


async def test_a_use_is_recorded_in_the_store(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    """Within the next batch (written every second), not by the request itself."""
    gateway = await start_gateway(upstream.url)
    token = mint({"role": "session"})
    sent = time.time()
    status, _, _ = await call(f"{gateway.url}/demo/api/hosts", token)
    assert status == 200
    store_path = gateway.config.store.path
    assert store_path is not None
    last = await use_written_since(store_path, token_fingerprint(token), sent)
    assert last is not None and last >= sent


async def test_without_its_store_every_token_gets_503(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, redis_server: RedisServer
) -> None:
    """Revocations may be in the store: no store, no pass, whatever the type."""
    gateway = await start_gateway(upstream.url, store={"type": "redis", "url": redis_server.url, "prefix": f"e2e-{uuid.uuid4().hex}:"})
    redis_server.stop()
    try:
        for role in ("session", "reader"):
            status, _, body = await call(f"{gateway.url}/demo/api/hosts", mint({"role": role}))
            assert (status, body["reason"]) == (503, "store_unavailable")
    finally:
        redis_server.start()
    status, _, _ = await call(f"{gateway.url}/demo/api/hosts", mint({"role": "session"}))
    assert status == 200  # back by itself
    assert len(upstream.received) == 1


async def test_a_revoked_token_is_401_and_never_forwarded(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url)
    token = mint({"role": "reader", "iat": int(time.time()) - 5})
    store_path = gateway.config.store.path
    assert store_path is not None
    store = SqliteStore(store_path)
    try:
        await store.revoke("token", token_fingerprint(token), time.time())
    finally:
        await store.close()
    status, headers, body = await call(f"{gateway.url}/demo/api/hosts", token)
    assert (status, body["reason"], body["error"]) == (401, "revoked", "invalid_token")
    assert set(body) == {"error", "error_description", "reason", "request_id"}
    assert token not in str(body) and 'error="invalid_token"' in headers["WWW-Authenticate"]
    assert upstream.received == []
