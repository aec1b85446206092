"""A limit's ``reserve`` on a real Redis: units taken in one call, spent in process, never more than the limit.

Each replica is a :class:`RateLimiter` with a Redis store of its own on one
real ``redis-server``, on a clock the test moves, so counts are exact; the
end-to-end tests (test_rate_limits.py) run the same through labgate processes.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import MappingProxyType

import pytest
import redis.asyncio as aioredis
from yarl import URL

from proxy.config import Upstream
from proxy.gateway.ratelimit import LimitPlan, RateLimiter, RateOutcome
from proxy.metrics import GatewayMetrics
from proxy.policy.rates import RateLimit
from proxy.reasons import Reason
from proxy.store.gcra import RateCheck
from proxy.store.memory import MemoryStore
from proxy.store.redis import RedisStore
from proxy.tokens.matchers import TypeRule
from proxy.tokens.observe import ObserveSourceSettings
from tests.conftest import free_port
from tests.faults.nodes import RedisNode
from tests.redis_server import RedisServer

NOW = 1_900_000_000.0
TOKEN = "f" * 64


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def upstream(limit: RateLimit) -> Upstream:
    source = ObserveSourceSettings("/api/oauth/token", (TypeRule("emergency", ()),))
    return Upstream("simplivity", URL("http://127.0.0.1"), "simplivity", source, rate_limit=limit)


class Replica:
    """One replica's limiter, spending as :meth:`proxy.gateway.protect.Protection.spend` does."""

    def __init__(self, limiter: RateLimiter, limit: RateLimit, token_type: str | None = "emergency") -> None:
        self.limiter = limiter
        self.token_type = token_type
        plan = limiter.plan(upstream(limit), token_type, None)
        assert plan is not None
        self.plan: LimitPlan = plan

    async def spend(self) -> RateOutcome:
        if self.plan.reserved:
            headers = self.limiter.spend_reserved(self.plan, None, TOKEN)
            if headers is not None:
                return RateOutcome(headers)
        return await self.limiter.check("simplivity", self.token_type, self.plan, None, TOKEN)


@pytest.fixture
async def observer(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url)
    yield client
    await client.aclose()


@pytest.fixture
async def stores(redis_server: RedisServer) -> AsyncIterator[list[RedisStore]]:
    """Two replicas' stores: one Redis, one prefix, a connection pool each."""
    prefix = f"reserve-{uuid.uuid4().hex}:"
    found = [RedisStore(redis_server.url, prefix=prefix) for _ in range(2)]
    await found[0].reserve_rate(RateCheck("warm", 1.0, 2), 2, NOW)  # the script loaded: a NOSCRIPT answer counts as a call
    yield found
    for store in found:
        await store.close()


async def script_calls(observer: aioredis.Redis) -> int:
    """How many scripts Redis ran by their SHA1, every client together (INFO commandstats)."""
    stats = await observer.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def replicas(stores: list[RedisStore], limit: RateLimit, clock: Clock) -> list[Replica]:
    return [Replica(RateLimiter(store, GatewayMetrics(), clock), limit) for store in stores]


async def test_two_replicas_together_admit_exactly_the_limit_and_each_reservation_is_one_script_call(
    stores: list[RedisStore], observer: aioredis.Redis
) -> None:
    clock = Clock()
    first, second = replicas(stores, RateLimit(20, 3600.0, "upstream", reserve=5), clock)
    before = await script_calls(observer)
    outcomes = [await (first if n % 2 == 0 else second).spend() for n in range(40)]
    calls = await script_calls(observer) - before
    admitted = [o.refusal is None for o in outcomes]
    assert sum(admitted) == 20  # 4 reservations of 5, every unit spent, not one more
    assert admitted == [True] * 20 + [False] * 20
    # 2 reservations per replica, then one call per refused request (Redis granted nothing).
    assert calls == 4 + 20
    refused = outcomes[20]
    assert refused.refusal is Reason.RATE_LIMITED and refused.headers["Retry-After"] == "180"
    assert refused.headers["RateLimit"] == '"upstream:simplivity";r=0;t=3600'


async def test_a_replica_admits_from_its_reservation_without_asking_redis(
    stores: list[RedisStore], observer: aioredis.Redis
) -> None:
    clock = Clock()
    replica = replicas(stores, RateLimit(1000, 1.0, "upstream", reserve=64), clock)[0]
    first = await replica.spend()
    after_reserving = await script_calls(observer)
    rest = [await replica.spend() for _ in range(63)]
    assert await script_calls(observer) == after_reserving  # 63 requests, no round trip
    assert all(o.refusal is None for o in [first, *rest])
    # What Redis said was left (1000, the 64 included) less this replica's spends.
    assert first.headers["RateLimit"] == '"upstream:simplivity";r=999;t=1'
    assert rest[-1].headers["RateLimit"] == '"upstream:simplivity";r=936;t=1'
    assert rest[-1].headers["RateLimit-Policy"] == '"upstream:simplivity";q=1000;w=1'
    await replica.spend()  # the 65th asks for more
    assert await script_calls(observer) == after_reserving + 1


async def test_units_left_at_expiry_are_dropped_not_given_back(stores: list[RedisStore]) -> None:
    clock = Clock()
    limit = RateLimit(20, 3600.0, "upstream", reserve=5)  # one every 180 s: a reservation lives 1 s
    first, second = replicas(stores, limit, clock)
    assert (await first.spend()).refusal is None  # 5 reserved, 1 spent
    clock.now += limit.reserve_lifetime  # the 4 left expire
    admitted = 1
    for _ in range(30):
        admitted += (await second.spend()).refusal is None
        admitted += (await first.spend()).refusal is None
    assert admitted == 20 - 4  # the dropped units were spent from the budget, by nobody


async def test_a_replica_asks_next_for_what_its_requests_spent_then_twice_as_many(
    stores: list[RedisStore], observer: aioredis.Redis
) -> None:
    clock = Clock()
    limit = RateLimit(100, 3600.0, "upstream", reserve=8)
    replica = replicas(stores, limit, clock)[0]
    assert (await replica.spend()).refusal is None  # 8 reserved, 1 spent
    clock.now += limit.reserve_lifetime  # 7 dropped
    before = await script_calls(observer)
    headers = [(await replica.spend()).headers["RateLimit"] for _ in range(7)]
    # Reservations of 1 (what was spent), 2, 4: three calls for seven requests, nothing dropped.
    assert await script_calls(observer) - before == 3
    assert headers[0] == '"upstream:simplivity";r=91;t=323'  # 100 - 8 - 1: the dropped 7 are gone; 9 units of 36 s
    assert headers[-1] == '"upstream:simplivity";r=85;t=539'


async def test_a_burst_waits_for_one_reservation_rather_than_asking_for_one_each(
    stores: list[RedisStore], observer: aioredis.Redis
) -> None:
    clock = Clock()
    replica = replicas(stores, RateLimit(20, 3600.0, "upstream", reserve=8), clock)[0]
    before = await script_calls(observer)
    outcomes = await asyncio.gather(*(replica.spend() for _ in range(30)))
    assert sum(o.refusal is None for o in outcomes) == 20
    # 8, 8 and 4 granted, then one grant of nothing that every request still waiting shares.
    assert await script_calls(observer) - before == 4


async def test_a_request_refused_by_an_exact_limit_spends_none_of_its_reserved_units(stores: list[RedisStore]) -> None:
    clock = Clock()
    limiter = RateLimiter(stores[0], GatewayMetrics(), clock)
    plan = limiter.plan(upstream(RateLimit(10, 3600.0, "upstream", reserve=4)), "emergency", RateLimit(2, 3600.0))
    assert plan is not None and not plan.reserved  # the type's limit is exact: every request asks Redis
    outcomes = [await limiter.check("simplivity", "emergency", plan, None, TOKEN) for _ in range(3)]
    assert [o.refusal for o in outcomes] == [None, None, Reason.RATE_LIMITED]
    assert outcomes[2].headers["RateLimit"] == '"type:emergency";r=0;t=3600, "upstream:simplivity";r=8;t=1440'
    other = Replica(limiter, RateLimit(10, 3600.0, "upstream", reserve=4), None)  # the upstream's budget alone
    assert [(await other.spend()).refusal for _ in range(2)] == [None, None]  # the 2 units left of the first 4


async def test_a_type_and_an_upstream_limit_both_reserving_spend_from_their_own_units(stores: list[RedisStore]) -> None:
    clock = Clock()
    limiter = RateLimiter(stores[0], GatewayMetrics(), clock)
    type_limit = RateLimit(3, 3600.0, reserve=2)
    plan = limiter.plan(upstream(RateLimit(10, 3600.0, "upstream", reserve=4)), "emergency", type_limit)
    assert plan is not None and plan.reserved
    outcomes = []
    for _ in range(5):
        headers = limiter.spend_reserved(plan, None, TOKEN)
        outcomes.append(RateOutcome(headers) if headers is not None else await limiter.check(
            "simplivity", "emergency", plan, None, TOKEN))
    assert [o.refusal for o in outcomes] == [None, None, None, Reason.RATE_LIMITED, Reason.RATE_LIMITED]
    assert outcomes[1].headers["RateLimit"] == '"type:emergency";r=1;t=2400, "upstream:simplivity";r=8;t=1440'
    # The type's third unit came from a second reservation; its refusal gave the upstream's unit back.
    assert outcomes[3].headers["RateLimit"] == '"type:emergency";r=0;t=3600'
    other = Replica(limiter, RateLimit(10, 3600.0, "upstream", reserve=4), None)
    assert (await other.spend()).headers["RateLimit"] == '"upstream:simplivity";r=6;t=1440'  # 10 less the 4 units spent: the refusals spent none


async def test_units_held_are_spent_while_redis_is_down_then_the_limit_fails_closed(tmp_path: Path) -> None:
    node = RedisNode(tmp_path / "redis")
    node.start()
    store = RedisStore(node.url, timeout=1.0)
    try:
        replica = replicas([store], RateLimit(100, 1.0, "upstream", reserve=3), Clock())[0]
        assert (await replica.spend()).refusal is None  # 3 reserved, 1 spent
        node.kill()
        assert [(await replica.spend()).refusal for _ in range(3)] == [None, None, Reason.STORE_UNAVAILABLE]
    finally:
        await store.close()
        node.stop()


@pytest.mark.parametrize("store_failure, expected", [("closed", Reason.STORE_UNAVAILABLE), ("open", None)])
async def test_an_unreachable_redis_fails_as_the_limit_says(store_failure: str, expected: Reason | None) -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=1.0)
    try:
        limit = RateLimit(100, 1.0, "upstream", store_failure, reserve=10)  # type: ignore[arg-type]
        replica = replicas([store], limit, Clock())[0]
        outcomes = await asyncio.gather(*(replica.spend() for _ in range(3)))
        assert [o.refusal for o in outcomes] == [expected] * 3
        assert all("RateLimit" not in o.headers for o in outcomes)
    finally:
        await store.close()


def test_in_process_stores_accept_a_reserve_and_spend_every_request_exactly() -> None:
    limiter = RateLimiter(MemoryStore(), GatewayMetrics(), Clock())
    plan = limiter.plan(upstream(RateLimit(3, 60.0, "upstream", reserve=2)), None, None)
    assert plan is not None and not plan.reserved and plan.limits[0].reserve == 0
    answers = [limiter.spend_here(plan, None, None) for _ in range(4)]
    assert [a is not None for a in answers] == [True, True, True, False]
    assert MappingProxyType(answers[0] or {})["RateLimit"] == '"upstream:simplivity";r=2;t=20'
