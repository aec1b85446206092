"""Uses of tokens with an idle lifetime: known in this process at once, written to the store in batches.

A request that reached the appliance is a use.  Writing each one would cost
a store round trip per request; instead this process remembers its latest use
of each token and writes all of them in one call (:meth:`Store.touch_many`)
every ``interval`` (1 s), and once more when labgate stops, so no use is lost
at shutdown.  Another replica therefore sees a use at most ``interval`` late:
it may find a token idle up to that much early, never late.  Idle lifetimes
are minutes (SimpliVity: 10), so one second is well within their granularity.

A batch the store could not take is kept for the next one; past
``remembered`` tokens waiting, the oldest is dropped (that token can only idle
out sooner, never live longer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping

from proxy.policy.model import Lifetimes
from proxy.store.base import Store, StoreUnavailable, TokenUse
from proxy.token_facts import TokenFacts

logger = logging.getLogger("labgate")
FLUSH_INTERVAL = 1.0  # seconds between two batches: how late another replica may see a use


class UseLog:
    """The latest known use of each token, and the uses not yet written.

    Plain dicts, in the order entries were last written: :meth:`record` runs on
    every forwarded request, so its common case is a few dict operations and
    no other call.  Past ``remembered`` tokens, the one written least lately is
    forgotten (what was least recently used, since every use writes).
    """

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        interval: float = FLUSH_INTERVAL,
        remembered: int = 100_000,
    ) -> None:
        self._store, self._clock, self._interval, self._remembered = store, clock, interval, remembered
        # Latest use known here: this process's own, or one the store told of.  Bounded.
        self._latest: dict[str, float] = {}
        # Per token not yet written: (at, until) of its latest use (a TokenUse once written).
        self._pending: dict[str, tuple[float, float | None]] = {}
        self._flusher: asyncio.Task[None] | None = None

    @property
    def latest_uses(self) -> Mapping[str, float]:
        """Each token's latest known use, to read without a call per request (:meth:`latest` is the same, one at a time)."""
        return self._latest

    def latest(self, key: str) -> float | None:
        return self._latest.get(key)

    def learned(self, key: str, at: float) -> None:
        """The store said the token was used at ``at`` (somewhere): later checks here need not ask again."""
        self._remember(key, at)

    def record(self, key: str, facts: TokenFacts, lifetimes: Lifetimes) -> None:
        """A request carrying the token reached the appliance now: known at once, written with the next batch.

        Only types with an idle lifetime keep use records (nothing else reads them).
        A record matters until the token dies anyway (its ``exp``, or its type's
        absolute lifetime), or, lacking that, one idle period on.  :meth:`learned`
        and :meth:`_keep` are written out here: this runs for every forwarded request.
        """
        idle = lifetimes.idle
        issued = facts.issued_at
        if idle is None or issued is None:
            return
        at = self._clock()
        until = facts.expires_at
        if lifetimes.absolute is not None:
            until = issued + lifetimes.absolute if until is None else min(until, issued + lifetimes.absolute)
        if until is None:
            until = at + idle
        latest = self._latest
        known = latest.pop(key, None)
        latest[key] = at if known is None or at > known else known
        if len(latest) > self._remembered:
            del latest[next(iter(latest))]  # the one written least lately: bounded
        pending = self._pending
        waiting = pending.get(key)
        if waiting is None:
            if len(pending) >= self._remembered:
                del pending[next(iter(pending))]  # the oldest waiting: bounded
            pending[key] = (at, until)
        elif waiting[0] < at:
            pending[key] = (at, until)
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_every_interval(), name="labgate-uses")

    def waiting(self) -> int:
        """How many tokens' uses are not written yet."""
        return len(self._pending)

    async def flush(self) -> None:
        """Write every waiting use in one store call; on failure they wait for the next.  Raises StoreUnavailable."""
        if not self._pending:
            return
        batch = [TokenUse(key, at, until) for key, (at, until) in self._pending.items()]
        self._pending = {}
        try:
            await self._store.touch_many(batch)
        except BaseException:  # StoreUnavailable, or cancelled at shutdown: nothing is lost
            for use in batch:
                self._keep(use.key, use.at, use.until)
            raise

    async def close(self) -> None:
        """At shutdown: stop the timer and write what is waiting."""
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        try:
            await self.flush()
        except StoreUnavailable as exc:
            logger.error("%d token uses could not be written at shutdown: %s", len(self._pending), exc)

    def _remember(self, key: str, at: float) -> None:
        """``at`` as the token's latest use unless a later one is known; written last, so forgotten last."""
        known = self._latest.pop(key, None)
        self._latest[key] = at if known is None or at > known else known
        if len(self._latest) > self._remembered:
            del self._latest[next(iter(self._latest))]  # the one written least lately: bounded

    def _keep(self, key: str, at: float, until: float | None) -> None:
        """Waiting for the next batch, unless a later use of the token already is."""
        waiting = self._pending.get(key)
        if waiting is not None and waiting[0] >= at:
            return
        if waiting is None and len(self._pending) >= self._remembered:
            del self._pending[next(iter(self._pending))]  # the oldest waiting: bounded
        self._pending[key] = (at, until)

    async def _flush_every_interval(self) -> None:
        """Runs while uses wait; ends when none do (a quiet process keeps no timer)."""
        try:
            while self._pending:
                await asyncio.sleep(self._interval)
                try:
                    await self.flush()
                except StoreUnavailable:
                    pass  # kept for the next batch; the store's own error log and metric say why
        finally:
            self._flusher = None
