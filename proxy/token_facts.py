"""What a token source learns about a token, as plain immutable data.

A token source turns the raw bearer string into either :class:`TokenFacts` or a
:class:`TokenRejection`; the policy decision only ever sees these, never the
token itself.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from proxy.ipaddrs import AddressSet
from proxy.reasons import Reason


def token_fingerprint(token: str) -> str:
    """The full sha256 of a token: how stores and caches key it.

    The last answer is remembered: a request asks twice (the token source's
    cache, then the token state), and clients repeat their token.
    """
    global _last  # noqa: PLW0603 -- one (token, digest) pair, replaced whole, so safe across threads
    last = _last
    if last[0] == token:
        return last[1]
    digest = hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()
    _last = (token, digest)
    return digest


_last = ("", hashlib.sha256(b"").hexdigest())


def short_token_hash(token: str) -> str:
    """The only way a token is ever named in logs: 12 hex digits of its sha256."""
    return token_fingerprint(token)[:12]


@dataclass(frozen=True)
class TokenFacts:
    """A verified token: its type, who it is for and how it narrows its type.

    ``path_prefixes`` and ``client_ips`` are the token's own restrictions (a
    Commvault custom token's endpoint list, a service account's IP allowlist);
    ``None`` means the token does not narrow its type.
    """

    token_type: str
    token_hash: str
    subject: str | None = None
    expires_at: float | None = None
    issued_at: float | None = None
    claims: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    path_prefixes: tuple[str, ...] | None = None
    client_ips: AddressSet | None = None


@dataclass(frozen=True)
class TokenRejection:
    """Why a token was not accepted; ``detail`` is safe to show (never the token)."""

    reason: Reason
    detail: str
