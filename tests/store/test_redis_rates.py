"""The Redis store's rate limits: one script by its SHA1, reloaded when Redis forgot it, the calls of one loop turn sent together."""

from __future__ import annotations

import asyncio
import socket
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


async def reads_processed(observer: aioredis.Redis) -> int:
    """How many times Redis read from its clients' sockets: one per round trip of a pipeline that fits one packet."""
    return int((await observer.info("stats"))["total_reads_processed"])


async def test_checks_made_in_the_same_turn_share_one_round_trip_and_never_overspend(
    redis_server: RedisServer, observer: aioredis.Redis
) -> None:
    store = RedisStore(redis_server.url, prefix=f"rates-{uuid.uuid4().hex}:")
    try:
        now = time.time()
        await store.rate_limit([RateCheck("warm", 1.0, 1)], now)  # the connection and the script, once
        before = await reads_processed(observer)
        answers = await asyncio.gather(*(store.rate_limit([RateCheck("burst", 60.0, 5)], now) for _ in range(20)))
        reads = await reads_processed(observer) - before
        assert [a.allowed for a in answers] == [True] * 5 + [False] * 15  # in the order the calls were made
        assert [a.states[0].remaining for a in answers[:5]] == [4, 3, 2, 1, 0]
        assert reads <= 3  # the pipeline and the observer's own INFO; one by one it would be 21
    finally:
        await store.close()


async def test_a_batch_that_meets_a_forgotten_script_runs_every_call_once(
    redis_server: RedisServer, observer: aioredis.Redis
) -> None:
    store = RedisStore(redis_server.url, prefix=f"rates-{uuid.uuid4().hex}:")
    try:
        now = time.time()
        await store.rate_limit([RateCheck("warm", 1.0, 1)], now)
        await observer.script_flush()
        answers = await asyncio.gather(*(store.rate_limit([RateCheck("again", 60.0, 3)], now) for _ in range(6)))
        assert [a.allowed for a in answers] == [True] * 3 + [False] * 3  # none ran twice, none was lost
    finally:
        await store.close()


async def test_every_call_of_a_batch_fails_closed_when_redis_cannot_be_reached() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens on it once the probe is closed
    store = RedisStore(f"redis://127.0.0.1:{port}/0", timeout=1.0)
    try:
        answers = await asyncio.gather(
            *(store.rate_limit([RateCheck("k", 1.0, 5)], time.time()) for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(a, StoreUnavailable) for a in answers), answers
    finally:
        await store.close()


async def test_closing_the_store_stops_a_batch_still_out_and_its_callers_fail_closed(tmp_path: Path) -> None:
    node = RedisNode(tmp_path / "redis")
    node.start()
    store = RedisStore(node.url, timeout=5.0)
    try:
        await store.rate_limit([RateCheck("warm", 1.0, 1)], time.time())
        node.freeze()
        calls = [asyncio.ensure_future(store.rate_limit([RateCheck("k", 1.0, 5)], time.time())) for _ in range(3)]
        await asyncio.sleep(0.2)  # the batch is out, waiting for the frozen Redis
        await store.close()
        for _ in range(10):  # a few turns of the loop for the callers to wake, not their 5 s timeout
            if all(call.done() for call in calls):
                break
            await asyncio.sleep(0)
        assert all(call.done() for call in calls)
        answers = await asyncio.gather(*calls, return_exceptions=True)
        assert all(isinstance(a, StoreUnavailable) for a in answers), answers
    finally:
        node.thaw()
        node.stop()
