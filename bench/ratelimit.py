"""What a rate limit costs per request, in the gateway's own steps, without the network.

``python -m bench.ratelimit`` prints microseconds per request for: a type
without ``rate_limit`` (the gateway's guard only), one limit per token, and a
type limit plus an upstream-wide one, each through the memory store (the
SQLite store keeps budgets in process the same way).  The end-to-end figure
comes from ``python -m bench.run --rate-limit``; this one is steady enough to
see a few microseconds, which a shared machine's load hides there.
"""

from __future__ import annotations

import asyncio
import time

from yarl import URL

from proxy.config import Upstream
from proxy.gateway.ratelimit import RateLimiter
from proxy.metrics import GatewayMetrics
from proxy.policy.rates import RateLimit
from proxy.store.memory import MemoryStore
from proxy.token_facts import TokenFacts
from proxy.tokens.matchers import TypeRule
from proxy.tokens.observe import ObserveSourceSettings

REQUESTS = 50_000
NEVER_REACHED = RateLimit(1_000_000_000, 3600.0)


async def per_request(upstream: Upstream, type_limit: RateLimit | None) -> float:
    """Microseconds per request for the steps ``Gateway._spend_rate_limits`` takes."""
    limiter = RateLimiter(MemoryStore(), GatewayMetrics())
    facts = TokenFacts(token_type="emergency", token_hash="bench")
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(REQUESTS):
            if type_limit is None and upstream.rate_limit is None:
                continue  # the gateway's guard: nothing else runs
            plan = limiter.plan(upstream, "emergency", type_limit)
            assert plan is not None
            await limiter.check(upstream.name, "emergency", plan, facts, "0" * 64)
        best = min(best, time.perf_counter() - started)
    return best / REQUESTS * 1e6


async def main() -> None:
    # SimpliVity's token endpoint; the source is never used here, only the limits are.
    source = ObserveSourceSettings("/api/oauth/token", (TypeRule("emergency", ()),))
    plain = Upstream("svt", URL("http://127.0.0.1"), "simplivity", source)
    limited = Upstream("svt", URL("http://127.0.0.1"), "simplivity", source, rate_limit=NEVER_REACHED)
    cases = {
        "no rate_limit": await per_request(plain, None),
        "type limit": await per_request(plain, NEVER_REACHED),
        "type + upstream": await per_request(limited, NEVER_REACHED),
    }
    print(" ".join(f"{name + ' us':>20}" for name in cases))
    print(" ".join(f"{value:>20.2f}" for value in cases.values()))


if __name__ == "__main__":
    asyncio.run(main())
