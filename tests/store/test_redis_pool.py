"""The Redis store's connections: a bounded pool that queues a burst, replaces dead connections, answers in time."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from proxy.store.base import StoreUnavailable
from proxy.store.gcra import RateCheck
from proxy.store.redis import RedisStore
from tests.faults.nodes import RedisNode

TIMEOUT = 0.5
MARGIN = 1.0  # what a loaded two-core machine may add to a timeout


@pytest.fixture
async def node(tmp_path: Path) -> AsyncIterator[RedisNode]:
    server = RedisNode(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


def store_on(node: RedisNode, *, connections: int) -> RedisStore:
    return RedisStore(node.url, prefix=f"pool-{uuid.uuid4().hex}:", timeout=TIMEOUT, max_connections=connections)


async def test_a_burst_larger_than_the_pool_waits_for_connections_instead_of_failing(node: RedisNode) -> None:
    store = store_on(node, connections=2)
    try:
        now = time.time()
        answers = await asyncio.gather(*(store.revoked_at("token", f"t{n}", now) for n in range(200)))
        assert answers == [None] * 200
        observer = aioredis.Redis.from_url(node.url)
        try:
            clients = (await observer.info("clients"))["connected_clients"]
        finally:
            await observer.aclose()
        assert clients <= 2 + 1  # the pool's two, and the observer: never more than the pool allows
    finally:
        await store.close()


async def test_a_pool_busy_past_the_timeout_fails_closed_within_it_and_ping_still_answers(node: RedisNode) -> None:
    store = store_on(node, connections=1)
    try:
        pool = store._client.connection_pool
        held = await pool.get_connection()  # the pool's only connection, busy
        started = time.monotonic()
        with pytest.raises(StoreUnavailable, match="no answer within"):
            await store.get_token("k", time.time())
        assert time.monotonic() - started <= TIMEOUT + MARGIN
        await store.ping()  # /readyz asks on its own connections: a busy pool is not an unreachable Redis
        await pool.release(held)
        assert await store.get_token("k", time.time()) is None
    finally:
        await store.close()


async def test_connections_killed_by_a_restart_are_replaced_without_failing_a_call(node: RedisNode) -> None:
    store = store_on(node, connections=20)
    try:
        now = time.time()
        await asyncio.gather(*(store.revoked_at("token", f"t{n}", now) for n in range(20)))  # 20 pooled connections
        node.kill()
        node.start()  # every pooled connection is dead now
        await asyncio.sleep(1.1)  # idle past the health-check interval for some; used at once for none
        answers = await asyncio.gather(*(store.revoked_at("token", f"t{n}", now) for n in range(20)))
        assert answers == [None] * 20  # no call failed: each dead connection was dropped and reopened
    finally:
        await store.close()


async def test_a_frozen_redis_costs_each_call_at_most_the_timeout(node: RedisNode) -> None:
    store = store_on(node, connections=4)
    try:
        await store.ping()
        node.freeze()
        try:
            started = time.monotonic()
            results = await asyncio.gather(
                store.get_token("k", time.time()), store.touch("k", time.time()), store.ping(),
                *(store.rate_limit([RateCheck("rl", 1.0, 5)], time.time()) for _ in range(3)),  # one batch
                return_exceptions=True,
            )
            took = time.monotonic() - started
        finally:
            node.thaw()
        assert all(isinstance(r, StoreUnavailable) and "no answer within" in str(r) for r in results), results
        assert took <= TIMEOUT + MARGIN
        await store.ping()
    finally:
        await store.close()
