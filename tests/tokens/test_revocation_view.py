"""The local view of revocations on a real redis-server: two guards on two stores are two replicas.

What must hold: a revocation reaches the other replica by its notice (no
lookup of its own); while the channel is down, behind or frozen, nothing is
served from the view (Redis is asked, and a Redis that cannot answer is a 503);
notices missed while away never leave a stale "not revoked" behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from proxy.policy.model import Lifetimes
from proxy.reasons import Reason
from proxy.store.base import RevocationKind, RevocationNotice
from proxy.store.redis import RedisStore
from proxy.store.redis_notices import FRESH_BOUND
from proxy.token_facts import TokenFacts
from proxy.tokens.state import TokenStateGuard
from tests.redis_server import RedisServer

WAIT = 10.0  # the longest any condition below is waited for (a busy two-core machine)


class CountingRedis(RedisStore):
    """The Redis store, counting revocation lookups: a lookup not made was answered by the view."""

    lookups = 0

    async def revocations(self, items: Sequence[tuple[RevocationKind, str]], now: float) -> list[float | None]:
        self.lookups += 1
        return await super().revocations(items, now)


async def until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT:g} s: {what}"
        await asyncio.sleep(0.01)


def facts(subject: str = "alice") -> TokenFacts:
    return TokenFacts(token_type="t", token_hash="abc", subject=subject, issued_at=time.time() - 60, expires_at=time.time() + 3600)


async def verdict(guard: TokenStateGuard, key: str, subject: str = "alice") -> Reason:
    rejection = await guard.check_revoked(key, facts(subject))
    return Reason.ALLOWED if rejection is None else rejection.reason


def fresh(store: RedisStore) -> bool:
    return store.revocation_feed is not None and store.revocation_feed.fresh()


@pytest.fixture
def prefix() -> str:
    return f"view-{uuid.uuid4().hex}:"


@pytest.fixture
async def replicas(redis_server: RedisServer, prefix: str) -> AsyncIterator[tuple[CountingRedis, CountingRedis]]:
    stores = CountingRedis(redis_server.url, prefix=prefix), CountingRedis(redis_server.url, prefix=prefix)
    try:
        yield stores
    finally:
        for store in stores:
            await store.close()


async def started(store: RedisStore) -> TokenStateGuard:
    """A guard on ``store`` whose view is up and caught up."""
    guard = TokenStateGuard(store)
    await guard.check_revoked("warm-up", facts("nobody"))  # starts listening
    await until(lambda: fresh(store), "the notice channel is up")
    return guard


def patient(store: RedisStore) -> None:
    """Trust the view for as long as a test waits: counting lookups must not depend on this machine's load."""
    assert store.revocation_feed is not None
    store.revocation_feed.bound = WAIT


def heard(store: RedisStore) -> tuple[list[RevocationNotice], list[None]]:
    """Every notice and reset ``store``'s channel delivers from now on."""
    notices: list[RevocationNotice] = []
    resets: list[None] = []
    assert store.revocation_feed is not None
    store.revocation_feed.attach(notices.append, lambda: resets.append(None))
    return notices, resets


async def test_a_revocation_on_one_replica_reaches_the_other_by_its_notice(
    replicas: tuple[CountingRedis, CountingRedis],
) -> None:
    a_store, b_store = replicas
    a, b = await started(a_store), await started(b_store)
    patient(b_store)
    notices, _ = heard(b_store)
    assert await verdict(b, "k") is Reason.ALLOWED
    asked = b_store.lookups
    for _ in range(50):
        assert await verdict(b, "k") is Reason.ALLOWED
    assert await verdict(b, "k2") is Reason.ALLOWED  # another token of the same subject: only its own name is new
    assert b_store.lookups == asked + 1  # repeats were answered here
    at = time.time()
    await a.revoke("subject", "alice", at)
    assert await verdict(a, "k") is Reason.REVOKED  # at once where it was written
    await until(lambda: bool(notices), "replica B hears of the revocation")
    assert notices == [RevocationNotice("subject", "alice", at)]
    assert await verdict(b, "k") is Reason.REVOKED and await verdict(b, "k2") is Reason.REVOKED
    assert await verdict(b, "k3", subject="bob") is Reason.ALLOWED
    assert b_store.lookups == asked + 2  # only bob's new token was looked up: alice's revocation came as a notice


async def test_the_notice_is_written_with_the_revocation(redis_server: RedisServer, prefix: str) -> None:
    listener = aioredis.Redis.from_url(redis_server.url)
    pubsub = listener.pubsub()
    store = RedisStore(redis_server.url, prefix=prefix)
    try:
        await pubsub.subscribe(f"{prefix}revocations")
        assert (await pubsub.get_message(timeout=WAIT) or {}).get("type") == "subscribe"
        await store.revoke("chain", "c1", 1234.5, None)
        message = await pubsub.get_message(timeout=WAIT)
        assert message is not None and message["data"] == b'{"kind":"chain","value":"c1","at":1234.5}'
        assert await store.revoked_at("chain", "c1", time.time()) == 1234.5
    finally:
        await pubsub.aclose()
        await listener.aclose()
        await store.close()


async def test_a_killed_subscription_never_leaves_a_stale_allow_and_the_view_comes_back(
    replicas: tuple[CountingRedis, CountingRedis], redis_server: RedisServer
) -> None:
    a_store, b_store = replicas
    a, b = await started(a_store), await started(b_store)
    assert await verdict(b, "k") is Reason.ALLOWED  # B holds "alice not revoked"
    admin = aioredis.Redis.from_url(redis_server.url)
    try:
        assert await admin.client_kill_filter(_type="pubsub") >= 2  # every subscription on this server: B's notice is lost
    finally:
        await admin.aclose()
    await a.revoke("subject", "alice", time.time())
    written = time.monotonic()
    while True:  # every allow B gives comes from a check begun within the bound of the write
        began = time.monotonic()
        outcome = await verdict(b, "k")
        if outcome is Reason.REVOKED:
            break
        assert outcome is Reason.ALLOWED and began - written <= FRESH_BOUND, outcome
        await asyncio.sleep(0.01)
    await until(lambda: fresh(b_store), "B subscribes again")
    assert await verdict(b, "k") is Reason.REVOKED  # the view was rebuilt from Redis, not from the lost notice
    patient(b_store)
    assert await verdict(b, "k4", subject="carol") is Reason.ALLOWED
    asked = b_store.lookups
    assert await verdict(b, "k4", subject="carol") is Reason.ALLOWED
    assert b_store.lookups == asked  # served locally again


async def test_a_notice_that_cannot_be_read_drops_the_view(
    replicas: tuple[CountingRedis, CountingRedis], prefix: str, redis_server: RedisServer
) -> None:
    _, b_store = replicas
    b = await started(b_store)
    patient(b_store)
    _, resets = heard(b_store)
    assert await verdict(b, "k") is Reason.ALLOWED
    asked = b_store.lookups
    intruder = aioredis.Redis.from_url(redis_server.url)
    try:
        await intruder.publish(f"{prefix}revocations", "not a notice")
    finally:
        await intruder.aclose()
    await until(lambda: bool(resets), "B drops what it knew")
    assert await verdict(b, "k") is Reason.ALLOWED
    assert b_store.lookups == asked + 1  # asked Redis again: it may have missed a revocation


@pytest.fixture
async def own_redis(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A redis-server this test may stop, freeze and restart."""
    server = RedisServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            os.kill(server.process.pid, signal.SIGCONT)
        server.stop()


async def test_redis_frozen_is_a_503_once_the_view_is_behind_then_served_again(own_redis: RedisServer) -> None:
    """The connection stays open but nothing comes back: only the heartbeat can tell."""
    store = CountingRedis(own_redis.url, timeout=0.5)
    try:
        guard = await started(store)
        assert await verdict(guard, "k") is Reason.ALLOWED
        assert own_redis.process is not None
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        frozen = time.monotonic()
        try:
            await until(lambda: time.monotonic() - frozen > FRESH_BOUND, "the bound passes")
            assert not fresh(store)
            assert await verdict(guard, "k") is Reason.STORE_UNAVAILABLE  # never the cached allow
        finally:
            os.kill(own_redis.process.pid, signal.SIGCONT)
        await until(lambda: fresh(store), "the view catches up")
        assert await verdict(guard, "k") is Reason.ALLOWED
    finally:
        await store.close()


async def test_redis_restarted_is_a_503_while_away_and_the_view_is_rebuilt(own_redis: RedisServer) -> None:
    store = CountingRedis(own_redis.url, timeout=0.5)
    try:
        guard = await started(store)
        assert await verdict(guard, "k") is Reason.ALLOWED
        own_redis.stop()
        await until(lambda: not fresh(store), "the channel is seen down")
        assert await verdict(guard, "k") is Reason.STORE_UNAVAILABLE
        own_redis.start()  # empty (no persistence): a revocation written now was never announced to this view
        writer = RedisStore(own_redis.url)
        try:
            await writer.revoke("token", "k", time.time())
        finally:
            await writer.close()
        await until(lambda: fresh(store), "subscribed again")
        assert await verdict(guard, "k") is Reason.REVOKED
    finally:
        await store.close()


async def test_uses_waiting_for_their_batch_reach_redis_at_shutdown(redis_server: RedisServer, prefix: str) -> None:
    store = RedisStore(redis_server.url, prefix=prefix)
    guard = TokenStateGuard(store, write_interval=3600)  # no batch would come before shutdown
    lifetimes = Lifetimes(idle=600)
    used = facts()
    for key in ("u1", "u2"):
        await guard.record_use(key, used, lifetimes)
    await guard.close()
    await store.close()
    reader = RedisStore(redis_server.url, prefix=prefix)
    try:
        assert [await reader.last_used(key) is not None for key in ("u1", "u2")] == [True, True]
    finally:
        await reader.close()
