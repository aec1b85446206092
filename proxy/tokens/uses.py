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

from cachetools import LRUCache

from proxy.store.base import Store, StoreUnavailable, TokenUse

logger = logging.getLogger("labgate")
FLUSH_INTERVAL = 1.0  # seconds between two batches: how late another replica may see a use


class UseLog:
    """The latest known use of each token, and the uses not yet written."""

    def __init__(self, store: Store, *, interval: float = FLUSH_INTERVAL, remembered: int = 100_000) -> None:
        self._store, self._interval, self._remembered = store, interval, remembered
        # Latest use known here: this process's own, or one the store told of.  Bounded.
        self._latest: LRUCache[str, float] = LRUCache(maxsize=remembered)
        self._pending: dict[str, TokenUse] = {}
        self._flusher: asyncio.Task[None] | None = None

    def latest(self, key: str) -> float | None:
        return self._latest.get(key)

    def learned(self, key: str, at: float) -> None:
        """The store said the token was used at ``at`` (somewhere): later checks here need not ask again."""
        self._latest[key] = max(at, self._latest.get(key, at))

    def used(self, key: str, at: float, until: float) -> None:
        """A use here: known at once, written with the next batch."""
        self.learned(key, at)
        self._keep(TokenUse(key, at, until))
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._flush_every_interval(), name="labgate-uses")

    def waiting(self) -> int:
        """How many tokens' uses are not written yet."""
        return len(self._pending)

    async def flush(self) -> None:
        """Write every waiting use in one store call; on failure they wait for the next.  Raises StoreUnavailable."""
        if not self._pending:
            return
        batch, self._pending = list(self._pending.values()), {}
        try:
            await self._store.touch_many(batch)
        except BaseException:  # StoreUnavailable, or cancelled at shutdown: nothing is lost
            for use in batch:
                self._keep(use)
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

    def _keep(self, use: TokenUse) -> None:
        waiting = self._pending.get(use.key)
        if waiting is not None and waiting.at >= use.at:
            return
        if waiting is None and len(self._pending) >= self._remembered:
            del self._pending[next(iter(self._pending))]  # the oldest waiting: bounded
        self._pending[use.key] = use

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
