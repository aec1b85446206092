"""This process's view of revocations: answers per name (token, subject, client, chain) without a round trip.

Two ways to keep it, chosen by what the store can do:

- :class:`NotifiedRevocations`, for a store that announces every revocation as
  it writes it (Redis, :mod:`proxy.store.redis_notices`).  Names are looked up
  in Redis once; from then on notices keep the answers current, and the view
  is served only while the notice channel is up and caught up (the feed's
  ``fresh``: every notice written more than ``bound`` seconds ago has been
  applied).  Otherwise every lookup asks Redis, and an unreachable Redis is a
  503, never an allow.  When the channel drops or comes back the view is
  dropped whole: notices sent meanwhile are lost.
- :class:`PolledRevocations`, for stores that are asked instead (SQLite,
  memory): each answer is kept ``REVOCATION_CACHE_SECONDS``.

Both hand out a *stamp* with each answer: the guard keeps it per token as
"none of this token's names is revoked", and :meth:`still_clear` says whether
that still holds, so a repeat request costs one dict lookup.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from cachetools import LRUCache, TTLCache

from proxy.store.base import RevocationFeed, RevocationKind, RevocationNotice, Store

# How stale a polled "not revoked" answer may be: a revocation reaches every process within this.
REVOCATION_CACHE_SECONDS = 0.5
NOT_REVOKED = -1.0
_NEVER_CLEAR = -1  # a stamp no check accepts
Name = tuple[RevocationKind, str]


class PolledRevocations:
    """Each name's answer from the store, kept for ``REVOCATION_CACHE_SECONDS``; stamps are expiry times."""

    def __init__(self, store: Store, clock: Callable[[], float], remembered: int) -> None:
        self._store, self._clock = store, clock
        # Each name's revocation time (or NOT_REVOKED) and when the store said so.
        self._answers: TTLCache[Name, tuple[float, float]] = TTLCache(
            maxsize=remembered, ttl=REVOCATION_CACHE_SECONDS, timer=clock
        )

    async def lookup(self, names: Sequence[Name]) -> tuple[list[float], float]:
        """Each name's revocation time, and until when a "none revoked" verdict on them holds.

        That is the oldest answer it rests on plus ``REVOCATION_CACHE_SECONDS``:
        never staler than the answers themselves.  Raises StoreUnavailable.
        """
        answers = {name: found for name in names if (found := self._answers.get(name)) is not None}
        missing = [name for name in names if name not in answers]
        if missing:
            asked = self._clock()
            for name, at in zip(missing, await self._store.revocations(missing, asked)):
                answers[name] = self._answers[name] = (NOT_REVOKED if at is None else at, asked)
        kept = [answers[name] for name in names]
        oldest = min((asked for _, asked in kept), default=self._clock())
        return [at for at, _ in kept], oldest + REVOCATION_CACHE_SECONDS

    def still_clear(self, stamp: float) -> bool:
        return self._clock() < stamp

    def revoked_here(self, kind: RevocationKind, value: str, at: float) -> None:
        """This process wrote the revocation: enforce it on the very next request."""
        self._answers[(kind, value)] = (at, self._clock())


class NotifiedRevocations:
    """Answers kept current by the store's notices; stamps are the view's generation."""

    def __init__(self, store: Store, feed: RevocationFeed, clock: Callable[[], float], remembered: int) -> None:
        self._store, self._feed, self._clock = store, feed, clock
        self._answers: LRUCache[Name, float] = LRUCache(maxsize=remembered)
        # Changes with every notice and reset: a stamp taken before one is no longer clear.
        self._generation = 0
        feed.attach(self._noticed, self._reset)

    async def lookup(self, names: Sequence[Name]) -> tuple[list[float], float]:
        """Each name's revocation time: from the view while it is fresh, else from the store.

        A store answer is kept only when the channel was up before it was asked
        and no notice or reset came while it was on its way (a notice may
        overtake the answer it makes stale).  Raises StoreUnavailable.
        """
        self._feed.start()
        if self._feed.fresh():
            known = [self._answers.get(name) for name in names]
            if all(at is not None for at in known):
                return [at for at in known if at is not None], self._generation
        generation, subscribed = self._generation, self._feed.subscribed()
        answers = await self._store.revocations(names, self._clock())
        found = [NOT_REVOKED if at is None else at for at in answers]
        if not (subscribed and generation == self._generation):
            return found, _NEVER_CLEAR
        for name, at in zip(names, found):
            self._answers[name] = at
        return found, generation

    def still_clear(self, stamp: float) -> bool:
        return stamp == self._generation and self._feed.fresh()

    def revoked_here(self, kind: RevocationKind, value: str, at: float) -> None:
        """This process wrote the revocation (its notice follows): enforce it on the very next request."""
        self._noticed(RevocationNotice(kind, value, at))

    def _noticed(self, notice: RevocationNotice) -> None:
        self._answers[(notice.kind, notice.value)] = notice.at
        self._generation += 1

    def _reset(self) -> None:
        self._answers.clear()
        self._generation += 1
