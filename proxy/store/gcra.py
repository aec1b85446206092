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
class Rate:
    """A limit's shape, worked out once per limit rather than per request: see :meth:`LocalRates.spend`."""

    interval: float  # seconds per request
    capacity: int
    period: float  # interval * capacity, as :attr:`RateCheck.period` computes it

    @classmethod
    def of(cls, interval: float, capacity: int) -> Rate:
        return cls(interval, capacity, interval * capacity)


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


def admit(tat: float | None, interval: float, period: float, now: float) -> float | None:
    """The new TAT when a request at ``now`` fits the limit (``period = interval * capacity``); None when refused."""
    new_tat = (now if tat is None or tat < now else tat) + interval
    return None if now + EPSILON < new_tat - period else new_tat


@dataclass(frozen=True, slots=True)
class RateGrant:
    """Units of a limit's budget handed out at once (a reservation): ``granted`` of the ``most`` asked for.

    ``remaining`` is what the limit had left beyond them and ``reset`` when the
    whole budget is back; ``retry_after`` says when a unit could go, when none was granted.
    """

    granted: int
    remaining: int
    reset: float
    retry_after: float


def grant(tat: float | None, check: RateCheck, most: int, now: float) -> tuple[float | None, RateGrant]:
    """GCRA for up to ``most`` requests at once: the largest ``k <= most`` that conforms, TAT moved by ``k`` intervals.

    ``k`` requests at ``now`` conform when ``max(TAT, now) + k * interval - period <= now``
    (:func:`admit` is the case ``k = 1``).  The new TAT to store (None when nothing
    was granted: write nothing) and the grant.
    """
    current = now if tat is None or tat < now else tat
    fits = math.floor((now + EPSILON + check.period - current) / check.interval)
    return granted_units(tat, check, max(0, min(most, fits)), now)


def granted_units(tat: float | None, check: RateCheck, granted: int, now: float) -> tuple[float | None, RateGrant]:
    """:func:`grant` once the number granted is known (Redis counts it in its script; the rest follows from the TAT)."""
    current = now if tat is None or tat < now else tat
    if granted <= 0:
        return None, RateGrant(0, 0, current - now, max(0.0, (current + check.interval) - check.period - now))
    new_tat = current + granted * check.interval
    left = math.floor((now - (new_tat - check.period)) / check.interval + EPSILON)
    return new_tat, RateGrant(granted, max(0, min(left, check.capacity - granted)), new_tat - now, 0.0)


def remaining_after(new_tat: float, interval: float, capacity: int, now: float) -> int:
    """Requests that could still go at ``now`` once an allowed request moved the TAT to ``new_tat``."""
    remaining = math.floor((now - (new_tat - interval * capacity)) / interval + EPSILON)
    return remaining if 0 <= remaining < capacity else (0 if remaining < 0 else capacity - 1)  # clamped


def step(tat: float | None, check: RateCheck, now: float) -> tuple[float | None, RateState]:
    """One limit at ``now``: the new TAT to store (None when refused) and what the limit says."""
    new_tat = admit(tat, check.interval, check.period, now)
    if new_tat is None:
        current = now if tat is None or tat < now else tat
        return None, RateState(0, current - now, (current + check.interval) - check.period - now)
    return new_tat, RateState(remaining_after(new_tat, check.interval, check.capacity, now), new_tat - now, 0.0)


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
    replicas that must share budgets use the Redis store.  Nothing here awaits, so a
    check is atomic within the event loop, and the gateway calls it directly rather
    than through the store's coroutines (:meth:`spend`).
    """

    def __init__(self, sweep_above: int = 10_000) -> None:
        self._tats: dict[str, float] = {}
        self._sweep_above = sweep_above

    def check(self, checks: Sequence[RateCheck], now: float) -> RateVerdict:
        if len(self._tats) > self._sweep_above:
            self._sweep(now)
        verdict, writes = apply([self._tats.get(c.key) for c in checks], checks, now)
        for check, tat in zip(checks, writes):
            if tat is not None:
                self._tats[check.key] = tat
        return verdict

    def reserve(self, check: RateCheck, most: int, now: float) -> RateGrant:
        """Up to ``most`` units of one budget at once (:func:`grant`); the stores share this with Redis's script."""
        new_tat, granted = grant(self._tats.get(check.key), check, most, now)
        if new_tat is not None:
            self._tats[check.key] = new_tat
        return granted

    def spend(self, keys: Sequence[str], rates: Sequence[Rate], now: float) -> list[float] | None:
        """:meth:`check` for an allowed request, without building its verdict: the new TATs, written.

        None when any limit refuses, and then nothing is written: :meth:`check` at
        the same ``now`` gives the refusal's verdict.  The same arithmetic
        (:func:`admit`); :func:`remaining_after` gives each limit's remaining budget.
        """
        tats = self._tats if len(self._tats) <= self._sweep_above else self._sweep(now)
        if len(keys) == 1:  # the usual case: one limit
            new_tat = admit(tats.get(keys[0]), rates[0].interval, rates[0].period, now)
            if new_tat is None:
                return None
            tats[keys[0]] = new_tat
            return [new_tat]
        written: list[float] = []
        for key, rate in zip(keys, rates):
            new_tat = admit(tats.get(key), rate.interval, rate.period, now)
            if new_tat is None:
                return None
            written.append(new_tat)
        tats.update(zip(keys, written))
        return written

    def _sweep(self, now: float) -> dict[str, float]:
        """Full budgets (TAT in the past) are the same as no entry: forget them."""
        self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
        return self._tats


def _unspent(state: RateState, check: RateCheck) -> RateState:
    """A limit that allowed a request another limit refused: this request spent nothing of it."""
    return RateState(min(state.remaining + 1, check.capacity), max(0.0, state.reset - check.interval), 0.0)
