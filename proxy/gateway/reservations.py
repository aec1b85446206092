"""Units of a shared rate limit reserved from Redis, spent in this process: a limit's ``reserve``.

An exact shared limit costs every request a round trip to Redis.  A limit with
``reserve: N`` instead takes up to N units of its budget in one atomic script
call (:meth:`proxy.store.base.Store.reserve_rate`: GCRA for N requests at once,
the TAT moved by as many intervals as were granted) and admits requests from
them here, with no round trip, until they are spent or the reservation expires
(:data:`proxy.policy.rates.RESERVE_LIFETIME` after it was asked for).  Units
left at expiry are dropped, never given back: giving back cannot be made safe
against a budget other replicas have spent meanwhile.

So every admitted request spent a unit Redis granted: all replicas together
never admit more than the limit grants.  Reservations are per process: with
``labgate serve --workers W`` each worker of each replica holds its own, so
"replicas" below counts processes.  Two costs, both bounded:

- a replica may refuse early while other replicas hold units they have not
  spent: at most ``(replicas - 1) * N`` units, for at most the lifetime;
- units are spent up to the lifetime after Redis granted them, so in any window
  of time the appliance may see up to ``replicas * N`` requests more than the
  exact limit would have let through in that same window (units granted just
  before it, spent in it), never more than Redis granted in all.

Dropped units were spent by nobody, so each reservation asks for what the
last one's requests spent (:meth:`Reservations._size`).  One reservation per
budget key is asked for at a time: requests that find no unit while one is on
its way wait for it (bounded by the store timeout, as the call is), so a burst
costs one round trip, not one per request.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from proxy.store.base import Store
from proxy.store.gcra import RateCheck, RateGrant, RateState

# A burst larger than a reservation waits for the next one; after this many rounds without a
# unit a request asks for its own, so no request waits on others indefinitely.
MAX_WAITS = 8


@dataclass(slots=True)
class Reservation:
    """Units Redis granted for one budget key: spent here until :attr:`expires`."""

    granted: int  # how many Redis granted
    units: int  # not yet spent
    budget: int  # what Redis said was left when it granted them, these units included
    spent: int
    tat: float  # the TAT Redis wrote: when the whole budget is back
    expires: float

    def state(self, now: float) -> RateState:
        """What the ``RateLimit`` field says after a spend: approximate across replicas (their spends are unseen)."""
        return RateState(max(0, self.budget - self.spent), max(0.0, self.tat - now), 0.0)


@dataclass(frozen=True, slots=True)
class Taken:
    """A unit taken for a request (give it back with :meth:`Reservations.give_back` when another limit refused)."""

    reservation: Reservation
    state: RateState


class Reservations:
    """Reserved units per budget key, in this process, and the reservation calls on their way."""

    def __init__(self, store: Store, sweep_above: int = 10_000) -> None:
        self._store = store
        self._held: dict[str, Reservation] = {}
        self._asking: dict[str, asyncio.Task[tuple[RateGrant, Taken | None]]] = {}
        self._sweep_above = sweep_above

    def spend_here(self, key: str, now: float) -> Reservation | None:
        """A unit from this process's reservation for ``key``, spent without an await; None when there is none."""
        held = self._held.get(key)
        if held is None or held.units <= 0 or now >= held.expires:  # units left at expiry are dropped
            return None
        held.units -= 1
        held.spent += 1
        return held

    def take_here(self, key: str, now: float) -> Taken | None:
        """:meth:`spend_here`, the unit kept so that it can be given back."""
        held = self.spend_here(key, now)
        return None if held is None else Taken(held, held.state(now))

    def give_back(self, taken: Taken) -> None:
        """An unspent unit (another limit refused the request) returns to this process's reservation, not to Redis."""
        taken.reservation.units += 1
        taken.reservation.spent -= 1

    async def take(self, check: RateCheck, most: int, lifetime: float, now: float) -> Taken | RateGrant:
        """A unit for ``check.key``, reserving more when none is left; Redis's grant of nothing when refused.

        Raises :class:`~proxy.store.base.StoreUnavailable` when the store cannot be asked.
        """
        for _ in range(MAX_WAITS):
            taken = self.take_here(check.key, now)
            if taken is not None:
                return taken
            if check.key not in self._asking:
                break
            granted, _ = await asyncio.shield(self._asking[check.key])  # another request's reservation
            if granted.granted == 0:
                return granted
        granted, mine = await asyncio.shield(self._ask(check, most, lifetime, now))
        return mine if mine is not None else granted

    def _ask(self, check: RateCheck, most: int, lifetime: float, now: float) -> asyncio.Task[tuple[RateGrant, Taken | None]]:
        """One reservation call for ``check.key``, shared by every request waiting for it; not cancelled with any of them."""
        task = asyncio.get_running_loop().create_task(self._reserve(check, most, lifetime, now))
        self._asking[check.key] = task
        task.add_done_callback(lambda done: self._forget_asking(check.key, done))
        return task

    def _forget_asking(self, key: str, done: asyncio.Task[tuple[RateGrant, Taken | None]]) -> None:
        if self._asking.get(key) is done:
            del self._asking[key]
        if not done.cancelled():
            done.exception()  # retrieved: a failure every waiter already learnt of (or none was left to)

    async def _reserve(self, check: RateCheck, most: int, lifetime: float, now: float) -> tuple[RateGrant, Taken | None]:
        """The grant, installed as this process's reservation, its first unit already taken for the asking request."""
        granted = await self._store.reserve_rate(check, self._size(check.key, most), now)
        if granted.granted == 0:
            return granted, None
        if len(self._held) > self._sweep_above:
            self._sweep(now)
        held = self._held[check.key] = Reservation(
            granted.granted, granted.granted - 1, granted.remaining + granted.granted, 1, now + granted.reset, now + lifetime
        )
        return granted, Taken(held, held.state(now))

    def _size(self, key: str, most: int) -> int:
        """How many units to ask for: ``most`` at first; then what the last reservation's requests used.

        Units dropped at expiry were spent from the budget by nobody, so a key
        whose requests left units unspent asks next time only for as many as they
        spent (down to 1: an exact check), and one whose requests spent them all
        asks for twice as many, up to ``most``.  A quiet key wastes at most what
        its last reservation had left; a busy one soon asks for ``most`` again.
        """
        last = self._held.get(key)
        if last is None:
            return most
        if last.units > 0:
            return max(1, min(most, last.spent))
        return min(most, 2 * last.granted)

    def _sweep(self, now: float) -> None:
        """Expired or spent reservations are the same as none: forget them."""
        self._held = {key: held for key, held in self._held.items() if held.units > 0 and held.expires > now}


async def spend_shared(
    held: Reservations, store: Store, reserves: Sequence[tuple[int, float]], checks: Sequence[RateCheck], now: float
) -> tuple[bool, list[RateState | None]]:
    """A request's limits when some reserve: those from reserved units, the others in one store check; all or none.

    ``reserves`` gives each check's ``reserve`` (0: checked exactly) and lifetime.
    Reserved limits go first: a refusal after them gives their units back to
    this process's reservations, which is safe, whereas an exact check's spending
    could not be undone.  Allowed or not, and each limit's state; None for a
    limit not asked because an earlier one refused.
    """
    states: list[RateState | None] = [None] * len(checks)
    taken: list[tuple[int, Taken]] = []
    try:
        for index, ((reserve, lifetime), check) in enumerate(zip(reserves, checks)):
            if reserve:
                found = await held.take(check, reserve, lifetime, now)
                if isinstance(found, RateGrant):  # Redis granted nothing: refused, as an exact check would be
                    states[index] = RateState(0, found.reset, found.retry_after)
                    return _refused(held, taken, states)
                taken.append((index, found))
                states[index] = found.state
        exact = [index for index, (reserve, _) in enumerate(reserves) if not reserve]
        if exact:
            verdict = await store.rate_limit([checks[index] for index in exact], now)
            for index, state in zip(exact, verdict.states):
                states[index] = state
            if not verdict.allowed:
                return _refused(held, taken, states)
    except BaseException:
        for _, unit in taken:
            held.give_back(unit)
        raise
    return True, states


def _refused(
    held: Reservations, taken: list[tuple[int, Taken]], states: list[RateState | None]
) -> tuple[bool, list[RateState | None]]:
    """The units taken for a refused request go back to this process's reservations: it spent nothing."""
    for index, unit in taken:
        held.give_back(unit)
        states[index] = RateState(unit.state.remaining + 1, unit.state.reset, 0.0)
    return False, states
