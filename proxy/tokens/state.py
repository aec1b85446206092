"""Token state checks on every request: revocation, and a type's lifetimes.

Revocation: a token is dead when its own fingerprint, its subject, its
client id or its refresh chain (claim ``chain``, labgate's own tokens) was
revoked at or after its issue.  The answers come from this process's view of
revocations (:mod:`proxy.tokens.revocation_view`): with Redis, kept current by
the notices every revocation is published with, so a revocation reaches every
replica within ``FRESH_BOUND`` (0.25 s; usually one pub/sub delivery) and a
request costs no round trip; with SQLite or memory, answers cached for at most
``REVOCATION_CACHE_SECONDS`` (0.5 s).  A token whose names were all found
unrevoked is then cleared with one lookup while that verdict holds.

Lifetimes: ``ttl`` and ``absolute`` from issue (no store needed), ``idle``
since last use.

SimpliVity's tokens die after 10 minutes without use and 24 hours after issue
even with continuous use; packs say so in ``lifetimes`` and this enforces it
for every token source, through the store so that all workers and replicas
agree.  Uses are written in batches every ``write_interval`` (1 s, and at
shutdown: :mod:`proxy.tokens.uses`), and the store is read only when what this
process knows would make the token idle: idle expiry is exact to within
``write_interval`` (early, never late).  A store that cannot be reached fails
closed (503), never open.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from proxy.policy.model import Lifetimes
from proxy.reasons import Reason
from proxy.store.base import RevocationKind, Store, StoreUnavailable
from proxy.token_facts import TokenFacts, TokenRejection
from proxy.tokens.revocation_view import NOT_REVOKED, Name, NotifiedRevocations, PolledRevocations
from proxy.tokens.uses import FLUSH_INTERVAL, UseLog


class Pending(enum.Enum):
    """What a synchronous check answers when only an awaited one can tell."""

    STORE = "store"  # the store (or the revocation view's lookup) must be read: ask the awaited check


class TokenStateGuard:
    """Checks revocations and lifetimes and records uses for one store; one per gateway."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        write_interval: float = FLUSH_INTERVAL,
        remembered: int = 100_000,
    ) -> None:
        self._store = store
        self._clock = clock
        feed = store.revocation_feed
        self._revocations: NotifiedRevocations | PolledRevocations = (
            PolledRevocations(store, clock, remembered) if feed is None else NotifiedRevocations(store, feed, clock, remembered)
        )
        # A polled view's stamps are expiry times: checked here without a call (see revocation_view).
        self._polled = isinstance(self._revocations, PolledRevocations)
        self._uses = UseLog(store, clock=clock, interval=write_interval, remembered=remembered)
        self._latest_uses = self._uses.latest_uses
        # The token was used: a request carrying it reached the appliance.  Costs no store round trip, nor an
        # await: the use log's own method (:meth:`UseLog.record`), so the request path makes one call for it.
        self.record_use_now: Callable[[str, TokenFacts, Lifetimes], None] = self._uses.record
        # Per token: the view's stamp for "none of its names revoked" (see revocation_view).
        self._clear: dict[str, float] = {}
        # Per token whose facts passed check_here's fixed checks under a type's lifetimes: until when
        # ttl and absolute still hold.  Kept with the very facts and lifetimes objects it was worked out for.
        self._within: dict[str, tuple[TokenFacts, Lifetimes, float]] = {}
        self._remembered = remembered

    def clear_here(self, key: str) -> bool:
        """True while this process's view still clears every name of the token: no await needed.

        False: ask :meth:`check_revoked`, which looks the names up.
        """
        stamp = self._clear.get(key)
        return stamp is not None and self._revocations.still_clear(stamp)

    def known_here(self, key: str, facts: TokenFacts, lifetimes: Lifetimes) -> TokenRejection | None | Pending:
        """:meth:`clear_here`, then :meth:`check_here`, in one call: the request path's question for a cached token.

        ``Pending.STORE``: not cleared here, or the idle lifetime needs the store; ask
        :meth:`check_revoked` and :meth:`check`.  A token seen before under the same
        lifetimes is answered from what :meth:`check_here` worked out for it then
        (its fixed checks passed, the time ttl and absolute run out), so the common
        case is a few dict reads; anything past that time goes through
        :meth:`check_here` itself, which names the reason.
        """
        stamp = self._clear.get(key)
        if stamp is None:
            return Pending.STORE
        now = self._clock()
        if not (now < stamp if self._polled else self._revocations.still_clear(stamp)):
            return Pending.STORE
        within = self._within.get(key)
        if within is None or within[0] is not facts or within[1] is not lifetimes or now >= within[2]:
            return self._check_and_remember(key, facts, lifetimes)
        idle = lifetimes.idle
        if idle is None:
            return None
        issued = facts.issued_at
        assert issued is not None  # remembered only when it passed check_here's iat check (or nothing is enforced)
        if now - max(issued, self._latest_uses.get(key) or issued) < idle:
            return None
        return Pending.STORE

    def _check_and_remember(self, key: str, facts: TokenFacts, lifetimes: Lifetimes) -> TokenRejection | None | Pending:
        """:meth:`check_here`; when the token passed its fixed checks, until when ttl and absolute hold, for :meth:`known_here`."""
        known = self.check_here(key, facts, lifetimes)
        if known is None or known is Pending.STORE:
            issued = facts.issued_at
            until = float("inf")
            if lifetimes.enforced and issued is not None:
                for limit in (lifetimes.absolute, lifetimes.ttl):
                    if limit is not None:
                        until = min(until, issued + limit)
            if len(self._within) >= self._remembered:
                self._within.clear()  # bounded; the next request of each token works it out again
            self._within[key] = (facts, lifetimes, until)
        return known

    async def check_revoked(self, key: str, facts: TokenFacts) -> TokenRejection | None:
        """None unless the token, its subject, its client or its chain was revoked at or after its issue."""
        if self.clear_here(key):
            return None
        rejection, stamp = await self._check_names(key, facts)
        if rejection is None:
            if len(self._clear) >= self._remembered:
                self._clear.clear()  # bounded; the next request of each token asks the names again
            self._clear[key] = stamp
        return rejection

    async def _check_names(self, key: str, facts: TokenFacts) -> tuple[TokenRejection | None, float]:
        """The revocation check itself, each name through the view; and the stamp of a "none revoked" verdict."""
        client = facts.claims.get("client_id", facts.claims.get("azp"))
        chain = facts.claims.get("chain")
        issued = facts.issued_at if facts.issued_at is not None else float("-inf")
        candidates: tuple[tuple[RevocationKind, object], ...] = (
            ("token", key), ("subject", facts.subject), ("client", client), ("chain", chain)
        )
        names: list[Name] = [(kind, value) for kind, value in candidates if isinstance(value, str)]
        try:
            answers, stamp = await self._revocations.lookup(names)
        except StoreUnavailable:
            return TokenRejection(Reason.STORE_UNAVAILABLE, "token state cannot be checked right now"), 0.0
        for (kind, _value), at in zip(names, answers):
            if at != NOT_REVOKED and (kind == "token" or at >= issued):
                return TokenRejection(Reason.REVOKED, f"the token's {kind} was revoked"), 0.0
        return None, stamp

    async def revoke(self, kind: RevocationKind, value: str, at: float, until: float | None = None) -> None:
        """Revoke in the store, and in this process's view at once: dead here on the very next request.

        Other processes see it within their view's bound.  Raises StoreUnavailable.
        """
        await self._store.revoke(kind, value, at, until)
        self._revocations.revoked_here(kind, value, at)
        self._clear.clear()  # any token may carry this name: ask again

    async def flush(self) -> None:
        """Write the uses waiting for the next batch now.  Raises StoreUnavailable."""
        await self._uses.flush()

    async def close(self) -> None:
        """At shutdown, before the store closes: the uses waiting are written, none lost."""
        await self._uses.close()

    async def check(self, key: str, facts: TokenFacts, lifetimes: Lifetimes) -> TokenRejection | None:
        """None when the token is within every limit; the reason otherwise.  Records nothing.

        ``key`` is the token's full fingerprint.  Only a request that reached the
        appliance is a use (:meth:`record_use`): a refused one must never keep a
        stolen token alive past its idle lifetime.
        """
        known = self.check_here(key, facts, lifetimes)
        if known is not Pending.STORE:
            return known
        now, issued, idle = self._clock(), facts.issued_at, lifetimes.idle
        assert issued is not None and idle is not None  # Pending.STORE only for an idle lifetime, past iat
        try:
            if await self._idle_for(key, issued, now, idle) >= idle:
                return TokenRejection(Reason.IDLE_EXPIRED, "the token was not used within its type's idle timeout")
        except StoreUnavailable:
            return TokenRejection(Reason.STORE_UNAVAILABLE, "token state cannot be checked right now")
        return None

    def check_here(self, key: str, facts: TokenFacts, lifetimes: Lifetimes) -> TokenRejection | None | Pending:
        """:meth:`check`'s answer when it needs no store read, without an await; ``Pending.STORE``: ask :meth:`check`.

        The store is needed only when this process's own knowledge says the idle lifetime has passed.
        """
        if not lifetimes.enforced:
            return None
        now = self._clock()
        issued = facts.issued_at
        if issued is None:
            return TokenRejection(Reason.MISSING_CLAIM, "this token type has lifetimes: the token must say when it was issued (iat)")
        too_long = _claims_too_long(facts, lifetimes)
        if too_long is not None:
            return too_long
        if lifetimes.absolute is not None and now >= issued + lifetimes.absolute:
            return TokenRejection(Reason.ABSOLUTE_EXPIRED, "the token is past its type's absolute lifetime")
        if lifetimes.ttl is not None and now >= issued + lifetimes.ttl:
            return TokenRejection(Reason.TTL_EXPIRED, "the token is past its type's ttl")
        if lifetimes.idle is None:
            return None
        # A use elsewhere can only make the idle time shorter: within it by what is known here, it is within it.
        if now - max(issued, self._uses.latest(key) or issued) < lifetimes.idle:
            return None
        return Pending.STORE

    async def record_use(self, key: str, facts: TokenFacts, lifetimes: Lifetimes) -> None:
        """The token was used: :attr:`record_use_now`, for callers that await."""
        self._uses.record(key, facts, lifetimes)

    async def _idle_for(self, key: str, issued: float, now: float, idle: float) -> float:
        """Seconds since the token's last use anywhere (or its issue, if never used).

        The store is asked only when what this process knows says ``idle`` has
        passed: a use elsewhere can only make that shorter.
        """
        known = max(issued, self._uses.latest(key) or issued)
        if now - known < idle:
            return now - known
        stored = await self._store.last_used(key)
        if stored is None:
            return now - known
        self._uses.learned(key, stored)
        return now - max(known, stored)


def _claims_too_long(facts: TokenFacts, lifetimes: Lifetimes) -> TokenRejection | None:
    """A signed token whose own ``exp - iat`` is longer than its type could ever live is refused outright.

    The type's lifetimes would still end it, but a token minted to outlive them
    says its issuer does not follow the policy.
    """
    exp, iat = facts.claims.get("exp"), facts.claims.get("iat")
    limit = lifetimes.absolute if lifetimes.absolute is not None else lifetimes.ttl
    if limit is None or not isinstance(exp, (int, float)) or not isinstance(iat, (int, float)):
        return None
    if exp - iat > limit:
        return TokenRejection(
            Reason.LIFETIME_TOO_LONG, f"the token claims to live {exp - iat:.0f}s, longer than its type allows ({limit:.0f}s)"
        )
    return None
