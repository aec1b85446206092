"""What every token source does, and the one place a configured source is built.

The gateway, ``labgate explain`` and ``labgate revoke`` only know
:class:`TokenSource`: a bearer string in, :class:`TokenFacts` or a
:class:`TokenRejection` out.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from proxy.issuer.ring import KeyRing
from proxy.store.base import Store
from proxy.token_facts import TokenFacts, TokenRejection
from proxy.tokens.introspect import IntrospectSource, IntrospectSourceSettings
from proxy.tokens.issuer_source import IssuerSource, IssuerSourceSettings
from proxy.tokens.jwt_source import JwtSource, JwtSourceSettings
from proxy.tokens.observe import ObserveSource, ObserveSourceSettings
from proxy.tokens.settings import TokenSourceSettings

if TYPE_CHECKING:
    from proxy.metrics import IntrospectionResult


class TokenSource(Protocol):
    async def verify(self, token: str) -> TokenFacts | TokenRejection:
        """The token's facts, or why it is refused; never raises for a bad token."""
        ...

    def verify_here(self, token: str, fingerprint: str | None = None) -> TokenFacts | TokenRejection | None:
        """The verdict when this process already holds it (a cached verified token), without an await.

        None: ask :meth:`verify`.  Never a verdict :meth:`verify` would not give now.
        ``fingerprint``: the token's :func:`~proxy.token_facts.token_fingerprint`, when the caller took it already.
        """
        ...

    async def close(self) -> None: ...


def _ignore(_value: object) -> None:
    return None


@dataclass(frozen=True)
class SourceEvents:
    """Callbacks a source reports to (metrics); each takes a bounded label value."""

    cache_lookup: Callable[[bool], None] = _ignore  # jwt: hit or miss
    jwks_fetch: Callable[[str], None] = _ignore  # jwt: ok or error
    introspection: Callable[[IntrospectionResult], None] = _ignore  # introspect: active, inactive or error
    observed: Callable[[str], None] = _ignore  # observe: the token type of a token seen issued


def open_token_source(
    settings: TokenSourceSettings,
    store: Store,
    *,
    upstream: str,
    events: SourceEvents = SourceEvents(),
    key_ring: KeyRing | None = None,
) -> TokenSource:
    """``key_ring``: the gateway's one ring for every ``issuer`` source (a fresh one on the store otherwise)."""
    if isinstance(settings, ObserveSourceSettings):
        return ObserveSource(settings, store, upstream=upstream, on_observed=events.observed)
    if isinstance(settings, IntrospectSourceSettings):
        return IntrospectSource(settings, on_result=events.introspection)
    if isinstance(settings, IssuerSourceSettings):
        ring = key_ring if key_ring is not None else KeyRing(store, settings.issuer)
        return IssuerSource(settings, ring, on_cache=events.cache_lookup)
    assert isinstance(settings, JwtSourceSettings)
    return JwtSource(settings, on_cache=events.cache_lookup, on_fetch=events.jwks_fetch)
