"""What stands between a decided request and a fragile appliance: its rate limits and in-flight caps.

The gateway asks :meth:`Protection.spend` right after an allowed decision (and
the forwarder for a public route), so a denied request spends nothing and a
limited one is never forwarded; the forwarder sends under :meth:`Protection.hold`,
so the appliance never has more than ``max_in_flight`` requests at once.  The
mechanisms live in :mod:`proxy.gateway.ratelimit` and :mod:`proxy.gateway.inflight`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager

from aiohttp import web

from proxy.errors import LabgateError
from proxy.gateway.exchange import Routed
from proxy.gateway.inflight import InFlightCap, InFlightGates, UpstreamBusy
from proxy.gateway.ratelimit import LimitPlan, RateLimiter
from proxy.gateway.recorder import Recorder
from proxy.metrics import GatewayMetrics
from proxy.policy.decide import Decision
from proxy.reasons import Reason
from proxy.store.base import Store
from proxy.token_facts import TokenFacts


class Busy(LabgateError):
    """The 503 ``upstream_busy`` answer, already recorded: send it instead of forwarding."""

    def __init__(self, response: web.Response) -> None:
        super().__init__("upstream busy", Reason.UPSTREAM_BUSY)
        self.response = response


class Protection:
    """Rate limits and in-flight caps for one config version."""

    def __init__(self, store: Store, metrics: GatewayMetrics, recorder: Recorder, *, capped: bool = True) -> None:
        """``capped``: some upstream or token type of this config has a ``max_in_flight`` (else :meth:`caps` is never asked)."""
        self.capped = capped
        self.rate_limiter = RateLimiter(store, metrics)
        self.in_flight = InFlightGates(metrics)
        self._metrics = metrics
        self._recorder = recorder

    def spend(self, routed: Routed, decision: Decision) -> Awaitable[web.Response | None] | None:
        """An allowed request spends its type's and its upstream's budgets.

        None: spent here, or nothing to spend (neither the type nor the upstream has
        a ``rate_limit``: no store call, no headers), so the request goes on without
        an await.  Otherwise the check through the store, to be awaited: the 429
        answer when a budget is spent, else None.
        """
        runtime, exchange = routed.runtime, routed.exchange
        compiled = runtime.pack.token_types.get(decision.token_type) if decision.token_type else None
        type_limit = compiled.spec.rate_limit if compiled is not None else None
        if type_limit is None and runtime.upstream.rate_limit is None:
            return None
        limiter = self.rate_limiter
        plan = limiter.plan(runtime.upstream, decision.token_type, type_limit)
        assert plan is not None  # a type or upstream limit exists
        facts = exchange.token if isinstance(exchange.token, TokenFacts) else None
        key = exchange.use.key if exchange.use is not None else None
        if limiter.local is not None:  # budgets in this process: spent without an await
            headers = limiter.spend_here(plan, facts, key)
            if headers is not None:
                exchange.rate_headers = headers
                return None
        elif plan.reserved:  # units reserved from the shared store, while this process holds some
            headers = limiter.spend_reserved(plan, facts, key)
            if headers is not None:
                exchange.rate_headers = headers
                return None
        return self._checked(routed, decision, plan, facts, key)

    async def _checked(
        self, routed: Routed, decision: Decision, plan: LimitPlan, facts: TokenFacts | None, key: str | None
    ) -> web.Response | None:
        """The budgets spent through the store; the 429 answer when one is spent."""
        exchange = routed.exchange
        outcome = await self.rate_limiter.check(routed.runtime.upstream.name, decision.token_type, plan, facts, key)
        if outcome.refusal is None:
            exchange.rate_headers = outcome.headers or None
            return None
        response = self._recorder.refuse(exchange, outcome.refusal, outcome.detail, allowed=decision)
        response.headers.update(outcome.headers)
        return response

    def caps(self, routed: Routed, decision: Decision) -> tuple[InFlightCap, ...]:
        """The caps a request is sent under (the type's, then the upstream's); empty costs nothing more."""
        upstream = routed.runtime.upstream
        compiled = routed.runtime.pack.token_types.get(decision.token_type) if decision.token_type else None
        type_cap = compiled.spec.max_in_flight if compiled is not None else None
        if type_cap is None and upstream.max_in_flight is None:
            return ()
        found = (
            self.in_flight.cap(upstream.name, decision.token_type, type_cap),
            self.in_flight.cap(upstream.name, None, upstream.max_in_flight),
        )
        return tuple(cap for cap in found if cap is not None)

    @asynccontextmanager
    async def hold(self, routed: Routed, decision: Decision, caps: tuple[InFlightCap, ...]) -> AsyncIterator[None]:
        """A place under every cap in ``caps`` for the block; :class:`Busy` (the answer recorded) past the queue time."""
        upstream = routed.runtime.upstream
        try:
            async with self.in_flight.hold(upstream.name, caps, upstream.queue_timeout):
                yield
        except UpstreamBusy as busy:
            self._metrics.busy_refusals.labels(upstream.name, decision.token_type or "none").inc()
            detail = f"{busy.cap} has max_in_flight requests at the appliance; waited {busy.waited:.1f} s"
            response = self._recorder.refuse(routed.exchange, Reason.UPSTREAM_BUSY, detail, allowed=decision)
            response.headers["Retry-After"] = str(busy.retry_after)
            raise Busy(response) from None
