"""The Redis store's rate limits: one script run by its SHA1, reloaded when Redis forgot it, keys as every replica names them."""

from __future__ import annotations

import time
import uuid
from typing import AsyncIterator

import pytest
import redis.asyncio as aioredis

from proxy.store.gcra import RateCheck
from proxy.store.redis import RedisStore
from tests.redis_server import RedisServer


@pytest.fixture
async def observer(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


async def test_a_redis_that_forgot_the_script_is_given_it_again_and_the_budget_holds(
    redis_server: RedisServer, observer: aioredis.Redis
) -> None:
    store = RedisStore(redis_server.url, prefix=f"rates-{uuid.uuid4().hex}:")
    try:
        now, check = time.time(), RateCheck("k", 30.0, 2)
        assert (await store.rate_limit([check], now)).allowed
        await observer.script_flush()  # as after a restart without persistence
        second = await store.rate_limit([check], now)
        assert second.allowed and second.states[0].remaining == 0  # the first request's spending was kept
        assert not (await store.rate_limit([check], now)).allowed
    finally:
        await store.close()


async def test_a_budget_lives_under_the_key_every_replica_names_it_by(redis_server: RedisServer, observer: aioredis.Redis) -> None:
    """``<prefix>rate:<budget key>``, holding the TAT: replicas of other versions share it during an upgrade."""
    prefix = f"rates-{uuid.uuid4().hex}:"
    store = RedisStore(redis_server.url, prefix=prefix)
    try:
        now = time.time()
        await store.rate_limit([RateCheck("svt:emergency:token:abc", 1.0, 60)], now)
        assert float(await observer.get(f"{prefix}rate:svt:emergency:token:abc")) == pytest.approx(now + 1.0)
    finally:
        await store.close()
