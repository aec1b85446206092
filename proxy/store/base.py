"""The store interface: what labgate remembers about tokens, whatever keeps it.

Tokens are always named by their full sha256 (:func:`proxy.tokens.facts.token_fingerprint`),
never by their text.  Every backend passes the same conformance suite
(``tests/store/test_conformance.py``); a backend that cannot be reached raises
:class:`StoreUnavailable`, which the gateway turns into a 503, never an allow.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Literal, Protocol

RevocationKind = Literal["token", "subject", "client"]
REVOCATION_KINDS: tuple[RevocationKind, ...] = ("token", "subject", "client")


class StoreUnavailable(Exception):
    """The store cannot be reached or answered with an error: fail closed."""


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
    def from_json(cls, text: str | bytes) -> "TokenRecord":
        return cls(**json.loads(text))


class Store(Protocol):
    """Token state. ``now`` is always passed in: stores never read a clock themselves."""

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

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers."""

    async def close(self) -> None:
        """Release connections and files."""
