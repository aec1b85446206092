"""The rate limiter's own steps: what is worked out once per limit, and in-process budgets spent without the store call.

The answers' fields must read exactly as they did when every request formatted
them whole from a verdict: the end-to-end tests (test_rate_limits.py) check
them through real sockets, these check them number for number.
"""

from __future__ import annotations

import math
import random
from types import MappingProxyType

from yarl import URL

from proxy.config import Upstream
from proxy.gateway.ratelimit import AppliedLimit, RateLimiter, RateOutcome, budget_keys, limit_plan
from proxy.metrics import GatewayMetrics
from proxy.policy.rates import RateLimit
from proxy.reasons import Reason
from proxy.store.gcra import LocalRates, Rate, RateCheck, RateVerdict
from proxy.store.memory import MemoryStore
from proxy.token_facts import TokenFacts
from proxy.tokens.matchers import TypeRule
from proxy.tokens.observe import ObserveSourceSettings

SOURCE = ObserveSourceSettings("/api/oauth/token", (TypeRule("emergency", ()),))


def simplivity(rate_limit: RateLimit | None = None) -> Upstream:
    return Upstream("simplivity", URL("http://127.0.0.1"), "simplivity", SOURCE, rate_limit=rate_limit)


class SharedBudgets(MemoryStore):
    """A memory store that keeps its budgets to itself, as Redis does: every check is the store operation."""

    def local_rates(self) -> None:  # type: ignore[override]
        return None


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def formatted_per_request(limits: tuple[AppliedLimit, ...], verdict: RateVerdict) -> str:
    """The ``RateLimit`` field as every request formatted it before the item starts were worked out once."""
    return ", ".join(
        f'"{a.policy}";r={s.remaining};t={math.ceil(s.reset - 1e-9) if s.reset > 0 else 0}'
        for a, s in zip(limits, verdict.states)
    )


def test_a_plan_works_out_the_policy_field_and_each_limits_constants_once() -> None:
    plan = limit_plan(simplivity(RateLimit(1000, 3600.0, "upstream")), "emergency", RateLimit(60, 60.0))
    assert plan is not None
    assert plan.policy_header == '"type:emergency";q=60;w=60, "upstream:simplivity";q=1000;w=3600'
    assert [a.state_prefix for a in plan.limits] == ['"type:emergency";r=', '"upstream:simplivity";r=']
    assert plan.rates == (Rate(1.0, 60, 60.0), Rate(3.6, 1000, 3600.0))
    assert [a.key_prefix for a in plan.limits] == ["simplivity:emergency:token:", "simplivity:*"]
    limiter = RateLimiter(MemoryStore(), GatewayMetrics())
    upstream = simplivity()
    assert limiter.plan(upstream, "emergency", RateLimit(5, 1.0)) is limiter.plan(upstream, "emergency", RateLimit(5, 1.0))
    assert limiter.plan(upstream, "office", None) is None


def test_only_the_memory_and_sqlite_stores_budgets_are_spent_in_process() -> None:
    assert isinstance(RateLimiter(MemoryStore(), GatewayMetrics()).local, LocalRates)
    assert RateLimiter(SharedBudgets(), GatewayMetrics()).local is None


async def test_spending_in_process_answers_what_the_store_operation_answers_field_for_field() -> None:
    """Random traffic through both ways, and the old per-request formatting beside them: the same answers."""
    chance = random.Random(61)
    upstream = simplivity(RateLimit(7, 60.0, "upstream"))
    clock = Clock(1_700_000_000.0)
    here = RateLimiter(MemoryStore(), GatewayMetrics(), clock)
    shared = RateLimiter(SharedBudgets(), GatewayMetrics(), clock)
    reference = LocalRates()
    limits = {"emergency": RateLimit(3, 60.0), "admin": RateLimit(2, 10.0, "subject"), "session": RateLimit(1, 5.0, "client_id")}
    answers: list[RateOutcome] = []
    for _ in range(1500):
        clock.now += chance.choice([0.0, 0.01, 0.7, 3.3, 9.0, 20.0])
        token_type = chance.choice([*limits, "office"])
        person = chance.choice(["carol", "dave"])
        facts = TokenFacts(token_type, "h", subject=person, claims=MappingProxyType({"client_id": f"{person}-script"}))
        key = chance.choice(["a" * 64, "b" * 64])
        plan = here.plan(upstream, token_type, limits.get(token_type))
        assert plan is not None
        # As Protection.spend does it: in process first, the full check only for a refusal.
        fields = here.spend_here(plan, facts, key)
        mine = RateOutcome(fields) if fields is not None else await here.check("simplivity", token_type, plan, facts, key)
        theirs = await shared.check("simplivity", token_type, plan, facts, key)
        assert (mine.headers, mine.refusal, mine.detail) == (theirs.headers, theirs.refusal, theirs.detail)
        checks = [RateCheck(k, a.limit.interval, a.limit.requests) for k, a in zip(budget_keys(plan, facts, key), plan.limits)]
        old = reference.check(checks, clock.now)
        assert mine.headers["RateLimit"] == formatted_per_request(plan.limits, old)
        assert mine.headers["RateLimit-Policy"] == plan.policy_header
        assert (mine.refusal is None) == old.allowed
        answers.append(mine)
    refused = [a for a in answers if a.refusal is not None]
    assert len(refused) > 100 and len(answers) - len(refused) > 100  # both ways, often
    assert all(a.refusal is Reason.RATE_LIMITED and int(a.headers["Retry-After"]) >= 1 for a in refused)

