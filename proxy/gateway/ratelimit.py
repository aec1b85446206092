"""Rate limits on forwarded requests: which budgets a request spends, and the headers that say so.

Checked after the decision and right before forwarding, so a denied request
never spends budget and a limited one never reaches the appliance.  A request
spends the budgets of its token type (per token, subject or client id) and of
its upstream (every client together) in one store operation: all or none
(:mod:`proxy.store.gcra`).  Shared across workers and replicas through the Redis
store; the memory and SQLite stores keep budgets per process.  A shared limit
with ``reserve`` spends units reserved from Redis in this process
(:mod:`proxy.gateway.reservations`); in-process budgets need no reservation.

Answers carry the fields of the IETF HTTPAPI working group's draft "RateLimit
header fields for HTTP" (draft-ietf-httpapi-ratelimit-headers, version -11),
in their structured-field forms: ``RateLimit-Policy`` lists each policy with
its quota ``q`` and window ``w`` in seconds, ``RateLimit`` its remaining quota
``r`` and the seconds ``t`` until the whole quota is back.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from proxy.config import Upstream
from proxy.gateway.reservations import Reservations, Taken, spend_shared
from proxy.metrics import GatewayMetrics
from proxy.policy.rates import RateLimit, rate_limit_fields
from proxy.reasons import Reason
from proxy.store.base import Store, StoreUnavailable
from proxy.store.gcra import LocalRates, Rate, RateCheck, RateVerdict, remaining_after
from proxy.token_facts import TokenFacts

logger = logging.getLogger("labgate")

# Tokens without the subject or client id a limit is kept by share one budget:
# stricter than a budget per token, which a caller holding many tokens could multiply.
UNNAMED = "-"


@dataclass(frozen=True, slots=True)
class AppliedLimit:
    """One limit that applies to requests of a type on an upstream, named as in ``RateLimit-Policy``.

    Everything a request needs that does not depend on the request is worked
    out here, once per config version: the store key (whole for an upstream's
    budget), the GCRA shape and the constant start of its ``RateLimit`` item.
    """

    policy: str  # "type:<token type>" or "upstream:<upstream name>"
    limit: RateLimit
    key_prefix: str  # the store key, less whose budget it is
    rate: Rate  # interval, capacity and period, as GCRA needs them
    state_prefix: str  # '"<policy>";r=': the RateLimit item up to its remaining quota
    reserve: int = 0  # units reserved from the shared store at once; 0: every request asks the store

    @classmethod
    def of(cls, policy: str, limit: RateLimit, key_prefix: str, *, shared: bool = False) -> AppliedLimit:
        reserve = limit.reserve if shared and limit.reserve is not None else 0
        return cls(policy, limit, key_prefix, Rate.of(limit.interval, limit.requests), f'"{policy}";r=', reserve)

    def check(self, key: str) -> RateCheck:
        return RateCheck(key, self.rate.interval, self.rate.capacity)


@dataclass(frozen=True, slots=True)
class LimitPlan:
    """The limits of one token type on one upstream, type's first: built once, used by every request."""

    limits: tuple[AppliedLimit, ...]
    policy_header: str  # RateLimit-Policy: the same on every answer
    rates: tuple[Rate, ...]  # each limit's, in order
    reserved: bool = False  # every limit spends reserved units: none needs the store while units last


@dataclass(frozen=True, slots=True)
class RateOutcome:
    """What the limits said: ``refusal`` is None when the request may go on."""

    headers: dict[str, str]
    refusal: Reason | None = None
    detail: str = ""


def limit_plan(
    upstream: Upstream, token_type: str | None, type_limit: RateLimit | None, *, shared: bool = False
) -> LimitPlan | None:
    """The limits a request of ``token_type`` spends; None when none applies (then nothing costs).

    ``shared``: budgets live in the store (Redis), where a limit's ``reserve`` applies.
    """
    applied: list[AppliedLimit] = []
    if type_limit is not None and token_type is not None:
        prefix = f"{upstream.name}:{token_type}:{type_limit.by}:"
        applied.append(AppliedLimit.of(f"type:{token_type}", type_limit, prefix, shared=shared))
    if upstream.rate_limit is not None:
        applied.append(AppliedLimit.of(f"upstream:{upstream.name}", upstream.rate_limit, f"{upstream.name}:*", shared=shared))
    if not applied:
        return None
    header = ", ".join(f'"{a.policy}";q={a.limit.requests};w={_whole(a.limit.per)}' for a in applied)
    return LimitPlan(tuple(applied), header, tuple(a.rate for a in applied), all(a.reserve for a in applied))


def explain_limits(upstream: Upstream, type_limit: RateLimit | None, token_type: str | None) -> dict[str, object]:
    """What ``labgate explain`` adds for an allowed request: the limits it would spend, in checking order.

    Empty when none applies; a denied request spends no budget, so it is asked only for allowed ones.
    """
    named = [(f"type:{token_type}", type_limit)] if type_limit is not None and token_type else []
    if upstream.rate_limit is not None:
        named.append((f"upstream:{upstream.name}", upstream.rate_limit))
    if not named:
        return {}
    return {"rate_limits": [{"policy": policy, **rate_limit_fields(limit)} for policy, limit in named]}


def budget_keys(plan: LimitPlan, facts: TokenFacts | None, token_key: str | None) -> list[str]:
    """The store keys of the budgets this request spends, in the plan's order: the upstream's, or their owners'."""
    keys = []
    for applied in plan.limits:
        by = applied.limit.by
        if by == "upstream":
            keys.append(applied.key_prefix)
        elif by == "token":
            keys.append(applied.key_prefix + (token_key or UNNAMED))
        else:
            keys.append(applied.key_prefix + _budget_owner(applied.limit, facts))
    return keys


def _budget_owner(limit: RateLimit, facts: TokenFacts | None) -> str:
    """Whose budget by subject or client id: a digest of it (no names in store keys)."""
    value = None
    if facts is not None:
        value = facts.subject if limit.by == "subject" else facts.claims.get("client_id", facts.claims.get("azp"))
    if not isinstance(value, str) or not value:
        return UNNAMED
    return hashlib.sha256(value.encode("utf-8", "surrogateescape")).hexdigest()[:32]


class RateLimiter:
    """Spends budgets through the store; counts refusals in ``labgate_rate_limited_total``.

    In-process budgets (memory and SQLite stores) are spent by :meth:`spend_here`
    without an await; shared ones (Redis) by :meth:`check`, one store round trip,
    or from units reserved in this process (:meth:`spend_reserved`, a limit's ``reserve``).
    """

    def __init__(self, store: Store, metrics: GatewayMetrics, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._metrics = metrics
        self._clock = clock
        self._plans: dict[tuple[str, str | None], LimitPlan | None] = {}
        self.local: LocalRates | None = store.local_rates()
        self.reservations = Reservations(store)

    def plan(self, upstream: Upstream, token_type: str | None, type_limit: RateLimit | None) -> LimitPlan | None:
        """:func:`limit_plan`, built once per upstream and type (a config version's limits never change)."""
        key = (upstream.name, token_type)
        try:
            return self._plans[key]
        except KeyError:
            plan = self._plans[key] = limit_plan(upstream, token_type, type_limit, shared=self.local is None)
            return plan

    def spend_here(self, plan: LimitPlan, facts: TokenFacts | None, token_key: str | None) -> dict[str, str] | None:
        """In-process budgets only (:attr:`local`): the answer's fields when the request may go, budgets spent.

        None when a limit refuses: nothing was spent, and :meth:`check` gives the
        refusal.  The same GCRA as every store; no coroutine, no store call, and
        only the ``RateLimit`` field, whose numbers change, is formatted.
        """
        assert self.local is not None
        now = self._clock()
        written = self.local.spend(budget_keys(plan, facts, token_key), plan.rates, now)
        if written is None:
            return None
        return {"RateLimit-Policy": plan.policy_header, "RateLimit": allowed_state(plan, written, now)}

    def spend_reserved(self, plan: LimitPlan, facts: TokenFacts | None, token_key: str | None) -> dict[str, str] | None:
        """Every limit reserves (:attr:`LimitPlan.reserved`): the answer's fields when units here paid for the request.

        None when a limit has no unit left in this process: nothing was spent,
        and :meth:`check` reserves more (or refuses).  No coroutine and no store
        call, as :meth:`spend_here`.
        """
        now, held = self._clock(), self.reservations
        keys = budget_keys(plan, facts, token_key)
        if len(keys) == 1:  # the usual case: one limit
            spent = held.spend_here(keys[0], now)
            if spent is None:
                return None
            state = f"{plan.limits[0].state_prefix}{max(0, spent.budget - spent.spent)};t={_reset(spent.tat - now)}"
            return {"RateLimit-Policy": plan.policy_header, "RateLimit": state}
        taken: list[Taken] = []
        for key in keys:
            unit = held.take_here(key, now)
            if unit is None:
                for spent_unit in taken:
                    held.give_back(spent_unit)
                return None
            taken.append(unit)
        states = tuple(t.state for t in taken)
        return {"RateLimit-Policy": plan.policy_header, "RateLimit": rate_state(plan.limits, RateVerdict(True, states))}

    async def check(
        self, upstream: str, token_type: str | None, plan: LimitPlan, facts: TokenFacts | None, token_key: str | None
    ) -> RateOutcome:
        now = self._clock()
        checks = [a.check(key) for a, key in zip(plan.limits, budget_keys(plan, facts, token_key))]
        limits = plan.limits
        if self.local is None and any(a.reserve for a in limits):
            reserves = [(a.reserve, a.limit.reserve_lifetime) for a in limits]
            try:
                allowed, found = await spend_shared(self.reservations, self._store, reserves, checks, now)
            except StoreUnavailable as exc:
                return self._store_failed(limits, exc)
            known = [(a, state) for a, state in zip(limits, found) if state is not None]  # a refusal stops asking
            limits = tuple(a for a, _ in known)
            verdict = RateVerdict(allowed, tuple(state for _, state in known))
        elif self.local is not None:
            verdict = self.local.check(checks, now)
        else:
            try:
                verdict = await self._store.rate_limit(checks, now)
            except StoreUnavailable as exc:
                return self._store_failed(plan.limits, exc)
        headers = {"RateLimit-Policy": plan.policy_header, "RateLimit": rate_state(limits, verdict)}
        if verdict.allowed:
            return RateOutcome(headers)
        self._metrics.rate_limited(upstream, token_type or "none")
        retry = max(1, math.ceil(verdict.retry_after))
        headers["Retry-After"] = str(retry)
        names = ", ".join(a.policy for a, s in zip(limits, verdict.states) if s.retry_after > 0)
        return RateOutcome(headers, Reason.RATE_LIMITED, f"rate limit {names} reached; retry in {retry} s")

    def _store_failed(self, limits: tuple[AppliedLimit, ...], exc: StoreUnavailable) -> RateOutcome:
        """Closed (503, nothing forwarded) unless every limit here says ``store_failure: open``."""
        if all(a.limit.store_failure == "open" for a in limits):
            logger.warning("rate limits not checked, forwarding (store_failure: open): %s", exc)
            return RateOutcome({})
        logger.warning("rate limits could not be checked: %s", exc)
        return RateOutcome({}, Reason.STORE_UNAVAILABLE, "the rate limit could not be checked")


def allowed_state(plan: LimitPlan, written: list[float], now: float) -> str:
    """:func:`rate_state` for an allowed request, from the TATs it wrote (the same numbers, without a verdict).

    An allowed request's TAT is at least one interval ahead of ``now``, so its
    reset is positive and ``t`` needs no guard.
    """
    if len(written) == 1:  # the usual case: one limit
        applied, tat = plan.limits[0], written[0]
        rate = applied.rate
        return f"{applied.state_prefix}{remaining_after(tat, rate.interval, rate.capacity, now)};t={math.ceil(tat - now - 1e-9)}"
    return ", ".join([
        f"{a.state_prefix}{remaining_after(tat, a.rate.interval, a.rate.capacity, now)};t={math.ceil(tat - now - 1e-9)}"
        for a, tat in zip(plan.limits, written)
    ])


def rate_state(limits: tuple[AppliedLimit, ...], verdict: RateVerdict) -> str:
    """The ``RateLimit`` field: a structured-field list, one item per limit, remaining ``r`` and reset ``t``."""
    return ", ".join(f"{a.state_prefix}{s.remaining};t={_reset(s.reset)}" for a, s in zip(limits, verdict.states))


def _reset(seconds: float) -> int:
    """``t``: whole seconds until the quota is back, rounded up (float slack aside)."""
    return math.ceil(seconds - 1e-9) if seconds > 0 else 0


def _whole(seconds: float) -> int:
    """Structured-field integers: whole seconds, rounded up so a client never comes back too early."""
    return max(0, math.ceil(seconds - 1e-9))
