"""labgate_revocation_notices_live: 1 while the Redis store's notice channel is caught up, 0 while checks ask Redis."""

from __future__ import annotations

import asyncio
import time
import uuid

import redis.asyncio as aioredis

from proxy.metrics import GatewayMetrics
from proxy.store.instrumented import InstrumentedStore
from proxy.store.memory import MemoryStore
from proxy.store.redis import RedisStore
from tests.redis_server import RedisServer

LIVE = "labgate_revocation_notices_live"


def live(metrics: GatewayMetrics) -> float | None:
    return metrics.registry.get_sample_value(LIVE, {"store": "redis"})


async def until(metrics: GatewayMetrics, value: float, within: float) -> float:
    """Seconds until the gauge reads ``value``; fails after ``within`` (a bounded loop)."""
    started = time.monotonic()
    while live(metrics) != value:
        assert time.monotonic() - started < within, f"{LIVE} still {live(metrics)}, not {value}, after {within} s"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


async def test_the_gauge_follows_the_channel_down_and_back_up(redis_server: RedisServer) -> None:
    metrics = GatewayMetrics()
    store = InstrumentedStore(RedisStore(redis_server.url, prefix=f"test-{uuid.uuid4().hex}:"), metrics)
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        assert live(metrics) == 0  # known before the channel is up: not live
        assert store.revocation_feed is not None
        store.revocation_feed.start()
        await until(metrics, 1, within=5.0)
        assert await admin.client_kill_filter(_type="pubsub") >= 1
        await until(metrics, 0, within=1.0)  # the subscription dropped: checks ask Redis
        await until(metrics, 1, within=5.0)  # subscribed again and a heartbeat back
    finally:
        await admin.aclose()
        await store.close()
    assert live(metrics) == 0  # closed: nothing listens any more


async def test_a_store_without_a_notice_channel_exports_no_series() -> None:
    metrics = GatewayMetrics()
    store = InstrumentedStore(MemoryStore(), metrics)
    try:
        assert live(metrics) is None
    finally:
        await store.close()


async def test_a_store_replaced_at_a_reload_leaves_the_gauge_to_the_new_one(redis_server: RedisServer) -> None:
    """The old store closes after the new one is live: its last word (0) must not stick."""
    metrics = GatewayMetrics()
    old, new = (InstrumentedStore(RedisStore(redis_server.url, prefix=f"test-{uuid.uuid4().hex}:"), metrics) for _ in range(2))
    try:
        for store in (old, new):
            assert store.revocation_feed is not None
            store.revocation_feed.start()
        await until(metrics, 1, within=5.0)
        await old.close()
        assert live(metrics) == 0
        await until(metrics, 1, within=1.0)  # the new store's next heartbeat
    finally:
        await old.close()
        await new.close()
