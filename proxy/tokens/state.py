"""Token state checks on every request: revocation, and a type's lifetimes.

Revocation: a token is dead when its own fingerprint, its subject, its
client id or its refresh chain (claim ``chain``, labgate's own tokens) was
revoked at or after its issue.  Answers are cached for at most
``REVOCATION_CACHE_SECONDS`` so every replica sees a revocation within a second
without a store round trip on every request; a token whose names were all
found unrevoked is then cleared with one lookup until the oldest of those
answers is that old (never longer than the answers themselves).

Lifetimes: ``ttl`` and ``absolute`` from issue, ``idle`` since last use.

SimpliVity's tokens die after 10 minutes without use and 24 hours after issue
even with continuous use; packs say so in ``lifetimes`` and this enforces it
for every token source, through the store so that all workers and replicas
agree.  Recording a use costs a store write at most once per token per
``write_interval`` (1 s): idle expiry is exact to within that.  A store that
cannot be reached fails closed (503), never open.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from cachetools import LRUCache, TTLCache

from proxy.policy.model import Lifetimes
from proxy.reasons import Reason
from proxy.store.base import RevocationKind, Store, StoreUnavailable
from proxy.token_facts import TokenFacts, TokenRejection

# How stale a "not revoked" answer may be: a revocation reaches every replica within this.
REVOCATION_CACHE_SECONDS = 0.5
_NOT_REVOKED = -1.0


class TokenStateGuard:
    """Checks revocations and lifetimes and records uses for one store; one per gateway."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        write_interval: float = 1.0,
        remembered: int = 100_000,
    ) -> None:
        self._store = store
        self._clock = clock
        self._write_interval = write_interval
        # This process's latest use of each token, and when it last wrote one: bounded.
        self._local_use: LRUCache[str, float] = LRUCache(maxsize=remembered)
        self._written: LRUCache[str, float] = LRUCache(maxsize=remembered)
        # Each name's revocation time (or _NOT_REVOKED) and when the store said so.
        self._revocations: TTLCache[tuple[str, str], tuple[float, float]] = TTLCache(
            maxsize=remembered, ttl=REVOCATION_CACHE_SECONDS, timer=clock
        )
        # Per token: "none of its names revoked" holds until this time (the oldest
        # answer it rests on, plus REVOCATION_CACHE_SECONDS), so a repeat within
        # that is one dict lookup, never staler than the answers themselves.
        self._clear_until: dict[str, float] = {}
        self._remembered = remembered

    async def check_revoked(self, key: str, facts: TokenFacts) -> TokenRejection | None:
        """None unless the token, its subject, its client or its chain was revoked at or after its issue."""
        now = self._clock()
        until = self._clear_until.get(key)
        if until is not None and now < until:
            return None
        rejection, oldest = await self._check_names(key, facts)
        if rejection is None:
            if len(self._clear_until) >= self._remembered:
                self._clear_until.clear()  # bounded; the next request of each token asks the names again
            self._clear_until[key] = oldest + REVOCATION_CACHE_SECONDS
        return rejection

    async def _check_names(self, key: str, facts: TokenFacts) -> tuple[TokenRejection | None, float]:
        """The revocation check itself, each name through the cache of store answers; and the oldest answer's time."""
        client = facts.claims.get("client_id", facts.claims.get("azp"))
        chain = facts.claims.get("chain")
        issued = facts.issued_at if facts.issued_at is not None else float("-inf")
        candidates: tuple[tuple[RevocationKind, object], ...] = (
            ("token", key), ("subject", facts.subject), ("client", client), ("chain", chain)
        )
        names = [(kind, value) for kind, value in candidates if isinstance(value, str)]
        try:
            answers = await self._revocations_of(names)
        except StoreUnavailable:
            return TokenRejection(Reason.STORE_UNAVAILABLE, "token state cannot be checked right now"), 0.0
        for (kind, _value), (at, _asked) in zip(names, answers):
            if at != _NOT_REVOKED and (kind == "token" or at >= issued):
                return TokenRejection(Reason.REVOKED, f"the token's {kind} was revoked"), 0.0
        return None, min(asked for _at, asked in answers)

    async def revoke(self, kind: RevocationKind, value: str, at: float, until: float | None = None) -> None:
        """Revoke in the store, and in this process's cache at once: dead here on the very next request.

        Other processes see it within ``REVOCATION_CACHE_SECONDS``.  Raises StoreUnavailable.
        """
        await self._store.revoke(kind, value, at, until)
        self._revocations[(kind, value)] = (at, self._clock())
        self._clear_until.clear()  # any token may carry this name: ask again

    async def _revocations_of(self, names: list[tuple[RevocationKind, str]]) -> list[tuple[float, float]]:
        """Each name's revocation time (or ``_NOT_REVOKED``) and when the store said so: cached, the rest in one call."""
        cached = {name: self._revocations.get(name) for name in names}
        answers = {name: found for name, found in cached.items() if found is not None}
        missing = [name for name in names if name not in answers]
        if missing:
            asked = self._clock()
            for name, at in zip(missing, await self._store.revocations(missing, asked)):
                answers[name] = self._revocations[name] = (_NOT_REVOKED if at is None else at, asked)
        return [answers[name] for name in names]

    async def check(self, key: str, facts: TokenFacts, lifetimes: Lifetimes) -> TokenRejection | None:
        """None when the token is within every limit; the reason otherwise.  Records nothing.

        ``key`` is the token's full fingerprint.  Only a request that reached the
        appliance is a use (:meth:`record_use`): a refused one must never keep a
        stolen token alive past its idle lifetime.
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
        try:
            if await self._idle_for(key, issued, now) >= lifetimes.idle:
                return TokenRejection(Reason.IDLE_EXPIRED, "the token was not used within its type's idle timeout")
        except StoreUnavailable:
            return TokenRejection(Reason.STORE_UNAVAILABLE, "token state cannot be checked right now")
        return None

    async def record_use(self, key: str, facts: TokenFacts, lifetimes: Lifetimes) -> None:
        """The token was used: a request carrying it reached the appliance.  Raises StoreUnavailable.

        Only types with an idle lifetime keep use records (nothing else reads them).
        """
        if lifetimes.idle is None or facts.issued_at is None:
            return
        now = self._clock()
        await self._record_use(key, now, self._forget_at(facts, lifetimes, now))

    async def _idle_for(self, key: str, issued: float, now: float) -> float:
        """Seconds since the token's last use anywhere (or its issue, if never used)."""
        local = self._local_use.get(key)
        if local is not None and now - local < self._write_interval:
            return now - local  # used here a moment ago: no need to ask the store
        stored = await self._store.last_used(key)
        latest = max(t for t in (issued, local, stored) if t is not None)
        return now - latest

    async def _record_use(self, key: str, now: float, until: float) -> None:
        self._local_use[key] = now
        written = self._written.get(key)
        if written is not None and now - written < self._write_interval:
            return  # coalesced: idle expiry stays exact to within write_interval
        await self._store.touch(key, now, until=until)
        self._written[key] = now

    @staticmethod
    def _forget_at(facts: TokenFacts, lifetimes: Lifetimes, now: float) -> float:
        """A use record matters until the token dies anyway (or, lacking that, one idle period on)."""
        ends = [t for t in (facts.expires_at,) if t is not None]
        if lifetimes.absolute is not None and facts.issued_at is not None:
            ends.append(facts.issued_at + lifetimes.absolute)
        return min(ends) if ends else now + (lifetimes.idle or 0.0)


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
