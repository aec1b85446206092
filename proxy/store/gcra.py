"""GCRA, the generic cell rate algorithm: an exact rate limit kept in one number per key.

A limit of ``capacity`` requests per ``period`` spaces requests ``interval =
period / capacity`` seconds apart on average and lets a whole ``capacity`` go at
once after a quiet ``period``.  Per key the store keeps one time, the TAT
(theoretical arrival time): when the budget would be full again.  A request at
``now`` is allowed when ``TAT + interval - capacity * interval <= now``; allowed,
the TAT moves to ``max(TAT, now) + interval``.  A refused request writes nothing,
so refusals never spend budget, and several limits are checked together: a
request spends every budget or none (:func:`apply`).

Every backend runs this same arithmetic (the Redis store in Lua, shared by
every replica; the memory and SQLite stores in process, :class:`LocalRates`);
the conformance suite holds them to it.  The store keeps the TAT until it is in the past, after
which a missing key and a stale one mean the same thing: a full budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# Float slack: 60/min at ``now`` exactly on a boundary must not lose a request to rounding.
EPSILON = 1e-9


@dataclass(frozen=True, slots=True)
class RateCheck:
    """One limit to check for a request: its store key and shape."""

    key: str
    interval: float  # seconds per request: period / capacity
    capacity: int  # requests that may go at once with a full budget

    @property
    def period(self) -> float:
        return self.interval * self.capacity


@dataclass(frozen=True, slots=True)
class RateState:
    """What one limit says after a request: its remaining budget and when it is full again."""

    remaining: int  # requests that could still go now (after this one, when it was allowed)
    reset: float  # seconds until the whole budget is back
    retry_after: float  # seconds until a refused request could go; 0 when allowed


@dataclass(frozen=True, slots=True)
class RateVerdict:
    """Allowed only when every check allowed; ``states`` in the order of the checks."""

    allowed: bool
    states: tuple[RateState, ...]

    @property
    def retry_after(self) -> float:
        return max((s.retry_after for s in self.states), default=0.0)


def step(tat: float | None, check: RateCheck, now: float) -> tuple[float | None, RateState]:
    """One limit at ``now``: the new TAT to store (None when refused) and what the limit says."""
    current = now if tat is None or tat < now else tat
    new_tat = current + check.interval
    allow_at = new_tat - check.period
    if now + EPSILON < allow_at:
        return None, RateState(0, current - now, allow_at - now)
    remaining = math.floor((now - allow_at) / check.interval + EPSILON)
    return new_tat, RateState(max(0, min(remaining, check.capacity - 1)), new_tat - now, 0.0)


def apply(tats: Sequence[float | None], checks: Sequence[RateCheck], now: float) -> tuple[RateVerdict, list[float | None]]:
    """All checks at once: the verdict, and the TATs to write (all None when refused: write nothing)."""
    writes: list[float | None] = []
    states: list[RateState] = []
    for tat, check in zip(tats, checks):
        new_tat, state = step(tat, check, now)
        writes.append(new_tat)
        states.append(state)
    if None not in writes:
        return RateVerdict(True, tuple(states)), writes
    unspent = tuple(
        state if new_tat is None else _unspent(state, check) for new_tat, state, check in zip(writes, states, checks)
    )
    return RateVerdict(False, unspent), [None] * len(checks)


class LocalRates:
    """Budgets kept in this process: the memory and SQLite stores' rate limits.

    One process only, by design: a store round trip per request (a thread hop and a
    write transaction for SQLite) would cost far more than the check.  Workers and
    replicas that must share budgets use the Redis store.  No await between reading
    and writing, so a check is atomic within the event loop.
    """

    def __init__(self, sweep_above: int = 10_000) -> None:
        self._tats: dict[str, float] = {}
        self._sweep_above = sweep_above

    def check(self, checks: Sequence[RateCheck], now: float) -> RateVerdict:
        if len(self._tats) > self._sweep_above:
            # Full budgets (TAT in the past) are the same as no entry: forget them.
            self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
        verdict, writes = apply([self._tats.get(c.key) for c in checks], checks, now)
        for check, tat in zip(checks, writes):
            if tat is not None:
                self._tats[check.key] = tat
        return verdict


def _unspent(state: RateState, check: RateCheck) -> RateState:
    """A limit that allowed a request another limit refused: this request spent nothing of it."""
    return RateState(min(state.remaining + 1, check.capacity), max(0.0, state.reset - check.interval), 0.0)
