"""The store interface: what labgate remembers about tokens, whatever keeps it.

Tokens are always named by their full sha256 (:func:`proxy.token_facts.token_fingerprint`),
never by their text.  Every backend passes the same conformance suite
(``tests/store/test_conformance.py``); a backend that cannot be reached raises
:class:`StoreUnavailable`, which the gateway turns into a 503, never an allow.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal, Protocol

from proxy.errors import LabgateError
from proxy.reasons import Reason
from proxy.store.gcra import LocalRates, RateCheck, RateGrant, RateVerdict

RevocationKind = Literal["token", "subject", "client", "chain"]
REVOCATION_KINDS: tuple[RevocationKind, ...] = ("token", "subject", "client", "chain")


class StoreUnavailable(LabgateError):
    """The store cannot be reached or answered with an error: fail closed."""

    reason = Reason.STORE_UNAVAILABLE


@dataclass(frozen=True)
class TokenRecord:
    """What labgate learned about one token when it saw it issued.

    ``expires_at`` bounds how long the record is kept; ``None`` keeps it until
    dropped.  ``refresh_hash`` is the sha256 of the refresh token issued with
    it, if any.
    """

    token_type: str
    issued_at: float
    expires_at: float | None = None
    upstream: str | None = None
    subject: str | None = None
    client_id: str | None = None
    refresh_hash: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> TokenRecord:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class SigningKeyRecord:
    """One of labgate's own token-signing keys (the ``issuer`` source), as stored.

    ``private_pem`` is PKCS#8 PEM, encrypted when the issuer has a key
    passphrase; ``public_pem`` lets verification and the JWKS work without
    ever loading it.  A key signs until ``retired_at``; retired, it still
    verifies tokens until ``usable_until`` and is forgotten after.  Everything
    but the two retirement times is fixed when the key is made.
    """

    kid: str
    algorithm: str
    created_at: float
    public_pem: str
    private_pem: str = field(repr=False)  # never in a log line
    retired_at: float | None = None
    usable_until: float | None = None

    @property
    def active(self) -> bool:
        return self.retired_at is None

    def material_json(self) -> str:
        """The fixed part, as backends store it beside the retirement times."""
        fixed = {"kid": self.kid, "algorithm": self.algorithm, "created_at": self.created_at,
                 "public_pem": self.public_pem, "private_pem": self.private_pem}
        return json.dumps(fixed, separators=(",", ":"))

    @classmethod
    def from_material(
        cls, text: str | bytes, retired_at: float | None = None, usable_until: float | None = None
    ) -> SigningKeyRecord:
        return cls(**json.loads(text), retired_at=retired_at, usable_until=usable_until)


@dataclass(frozen=True)
class TokenUse:
    """One token's latest use by this process, written in a batch: ``until`` is when it may be forgotten."""

    key: str
    at: float
    until: float | None = None


@dataclass(frozen=True)
class RevocationNotice:
    """A revocation as the store announced it to every replica: the same value it stored."""

    kind: RevocationKind
    value: str
    at: float


class RevocationFeed(Protocol):
    """Revocations as they are written, from a shared store that can announce them (Redis).

    A consumer keeps a local view of revocation answers and serves it only while
    :meth:`fresh` says every notice written up to a moment at most ``bound``
    seconds ago has been delivered.  ``on_reset`` is called whenever notices may
    have been lost (the channel went down, or came back): the view must then be
    dropped whole.
    """

    bound: float

    def attach(self, on_notice: Callable[[RevocationNotice], None], on_reset: Callable[[], None]) -> None:
        """Deliver every notice and reset to these callbacks (in the event loop, in order)."""

    def start(self) -> None:
        """Begin listening (needs a running event loop); doing it again does nothing."""

    def subscribed(self) -> bool:
        """True while the channel is up: a notice written now will be delivered."""

    def fresh(self) -> bool:
        """True when every notice written more than ``bound`` seconds ago has been delivered."""

    def watch(self, on_change: Callable[[bool], None]) -> None:
        """Call ``on_change(fresh)`` now, then at every heartbeat and whenever the channel goes up or down."""


def signing_key_order(key: SigningKeyRecord) -> tuple[float, str]:
    """Oldest first, the kid breaking ties: every backend lists keys in this order."""
    return key.created_at, key.kid


class Store(Protocol):
    """Token state. ``now`` is always passed in: stores never read a clock themselves.

    ``revocation_feed`` is set by a shared store that announces revocations as
    they are written (Redis); None for stores that are asked instead.
    """

    revocation_feed: RevocationFeed | None

    async def put_token(self, key: str, record: TokenRecord) -> None:
        """Remember a token (by fingerprint) until its ``expires_at``."""

    async def get_token(self, key: str, now: float) -> TokenRecord | None:
        """The token's record, or None when unknown or past ``expires_at``."""

    async def drop_token(self, key: str) -> bool:
        """Forget a token; True when it was known."""

    async def touch(self, key: str, at: float, until: float | None = None) -> None:
        """Record a use of the token (idle timeouts read it back); never moves back in time.

        ``until`` is when the use record may be forgotten (the token's own expiry).
        """

    async def touch_many(self, uses: Sequence[TokenUse]) -> None:
        """:meth:`touch` for each use, in one round trip: a process writes its uses in batches."""

    async def last_used(self, key: str) -> float | None:
        """The latest recorded use, or None when never used."""

    async def revoke(self, kind: RevocationKind, value: str, at: float, until: float | None = None) -> None:
        """Revoke a token (fingerprint), a subject or a client id as of ``at``.

        ``until`` is when the revocation may be forgotten (the longest a token
        it covers can live); None keeps it.  A later revocation of the same
        value replaces an earlier one.
        """

    async def revoked_at(self, kind: RevocationKind, value: str, now: float) -> float | None:
        """When ``value`` was revoked, or None."""

    async def revocations(self, items: Sequence[tuple[RevocationKind, str]], now: float) -> list[float | None]:
        """:meth:`revoked_at` for each item, in order, in one round trip: a new token's checks cost one."""

    async def signing_keys(self, now: float) -> list[SigningKeyRecord]:
        """labgate's signing keys not yet past their ``usable_until``, oldest first."""

    async def add_first_signing_key(self, key: SigningKeyRecord) -> bool:
        """Store ``key`` as the active signing key unless one is active already (then False, nothing written).

        Atomic: replicas that start together on an empty store end up with one key.
        """

    async def rotate_signing_key(self, key: SigningKeyRecord, usable_until: float) -> None:
        """In one step: retire every active key as of ``key.created_at`` and store ``key`` as the active one.

        The retired keys verify until ``usable_until``; one no later than
        ``key.created_at`` forgets them at once (a leaked key).  Keys already
        past their own ``usable_until`` are forgotten too.
        """

    async def put_record(self, kind: str, key: str, value: str, expires_at: float | None = None) -> None:
        """Store a JSON text under (kind, key), replacing any; forgotten after ``expires_at``.

        Records hold the token service's state (subjects, API clients, refresh
        tokens by hash, ...).  ``kind`` is a short lowercase name without ``:``;
        ``key`` is any text.
        """

    async def add_record(self, kind: str, key: str, value: str, now: float, expires_at: float | None = None) -> bool:
        """Store like :meth:`put_record` unless a live record is there already (then False, nothing written).

        Atomic put-if-absent: of several callers (replicas, processes on one
        file) adding the same (kind, key) at once, exactly one gets True.  A
        record past its ``expires_at`` at ``now`` counts as absent.
        """

    async def get_record(self, kind: str, key: str, now: float) -> str | None:
        """The record's text, or None when unknown or past its ``expires_at``."""

    async def rate_limit(self, checks: Sequence[RateCheck], now: float) -> RateVerdict:
        """GCRA (:mod:`proxy.store.gcra`) for every check at once, atomically.

        Allowed only when every check allows; then each key's budget is spent,
        otherwise nothing is written.  A key is forgotten once its budget is full again.
        Redis shares budgets across workers and replicas; the memory and SQLite
        stores keep them in this process (:class:`~proxy.store.gcra.LocalRates`).
        """

    async def reserve_rate(self, check: RateCheck, most: int, now: float) -> RateGrant:
        """Up to ``most`` units of one budget at once, atomically (:func:`~proxy.store.gcra.grant`).

        What a limit's ``reserve`` asks Redis for: the units are then spent in the
        gateway's process without a round trip each.  Granted units are spent from
        the budget at once; none granted writes nothing.
        """

    def local_rates(self) -> LocalRates | None:
        """The budgets :meth:`rate_limit` keeps in this process (memory, SQLite); None when they live in the store (Redis).

        The gateway spends in-process budgets directly: a call that never leaves the
        process needs no coroutine, no timing and no thread.
        """

    async def list_records(self, kind: str, now: float) -> list[tuple[str, str]]:
        """Every live record of ``kind`` as (key, value), sorted by key.

        Reads the whole kind: meant for administrators' lists, not per request.
        """

    async def delete_record(self, kind: str, key: str) -> bool:
        """Forget a record; True when it was there (expired or not)."""

    async def take_record(self, kind: str, key: str, now: float) -> str | None:
        """Atomically read and delete: of many callers (replicas) taking one record, exactly one gets it.

        A refresh token is rotated by taking its record, so it is used once.
        A record past its ``expires_at`` is not given out.
        """

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers."""

    async def close(self) -> None:
        """Release connections and files."""
