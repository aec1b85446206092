"""The ``issuer`` token source: access tokens labgate issued itself, verified with its key ring.

The checks are the ``jwt`` source's (RFC 8725: algorithms pinned, ``none``
never, ``crit`` refused, no key fetched from a token's headers, duplicate
claims refused), run by a :class:`JwtSource` whose keys are the ring's, with
everything else fixed by what labgate mints (:mod:`proxy.issuer.access_tokens`):

* algorithms ES256 and RS256 only, each key for its own algorithm: an HS256
  token "signed" with a published public key finds no key to verify with;
* ``typ`` must be ``at+jwt`` (RFC 9068 section 4); ``iss`` the issuer's url,
  ``aud`` the upstream's audience; ``exp``, ``iat``, ``sub`` and ``jti``
  required;
* the token type is the ``token_type`` claim, one of the types this upstream
  accepts; ``path_prefixes`` and ``client_ips`` narrow it;
* ``exp - iat`` within ``access_token_max_lifetime``: a longer token could
  outlive its key's grace, and labgate never signs one.

Verified tokens are cached for at most ``key_refresh_interval``, so a key
dropped from the ring (``labgate keys rotate --drop-old``) stops verifying
everywhere within two intervals.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from proxy.issuer.access_tokens import (
    ACCESS_TOKEN_TYP,
    CLIENT_IPS_CLAIM,
    PATH_PREFIXES_CLAIM,
    TOKEN_TYPE_CLAIM,
)
from proxy.issuer.emergency_clients import EmergencyClientTypes
from proxy.issuer.ring import KeyRing
from proxy.issuer.service_accounts import ServiceAccountScopes
from proxy.issuer.settings import ISSUER_ALGORITHMS, IssuerSettings
from proxy.reasons import Reason
from proxy.token_facts import TokenFacts, TokenRejection
from proxy.tokens.jwt_source import (
    DEFAULT_MAX_TOKEN_BYTES,
    JwtSource,
    JwtSourceSettings,
)
from proxy.tokens.matchers import Condition, TypeRule


@dataclass(frozen=True)
class IssuerSourceSettings:
    """An ``issuer`` token source: the issuer it trusts, this upstream's audience and accepted token types."""

    issuer: IssuerSettings
    audience: tuple[str, ...]
    token_types: tuple[str, ...]
    cache_size: int = 10000
    grants: tuple[tuple[str, str], ...] = ()  # token endpoint: (grant_type, token type) pairs
    # Management API: which type an emergency client's / a service-account scope's token gets.
    emergency_clients: EmergencyClientTypes | None = None
    service_accounts: ServiceAccountScopes | None = None
    max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES

    def __post_init__(self) -> None:
        if not self.audience or not self.token_types:
            raise ValueError("an issuer source needs an audience and at least one token type")

    def token_type_for(self, grant_type: str) -> str | None:
        """The token type a token endpoint grant yields for this upstream; None when it is not served."""
        return dict(self.grants).get(grant_type)

    def jwt_settings(self) -> JwtSourceSettings:
        """The same checks as a ``jwt`` source, pinned to what labgate mints."""
        return JwtSourceSettings(
            algorithms=ISSUER_ALGORITHMS,
            external_keys=True,
            issuer=self.issuer.url,
            audience=self.audience,
            leeway=self.issuer.leeway,
            required_claims=("iat", "sub", "jti"),
            expected_typ=ACCESS_TOKEN_TYP,
            type_rules=tuple(TypeRule(t, (Condition(TOKEN_TYPE_CLAIM, "equals", t),)) for t in self.token_types),
            path_prefixes_claim=PATH_PREFIXES_CLAIM,
            client_ips_claim=CLIENT_IPS_CLAIM,
            cache_size=self.cache_size,
            cache_max_seconds=self.issuer.key_refresh_interval,
            max_token_bytes=self.max_token_bytes,
        )


class IssuerSource:
    """Verifies labgate's own access tokens for one upstream."""

    def __init__(
        self, settings: IssuerSourceSettings, ring: KeyRing, *, on_cache: Callable[[bool], None] | None = None
    ) -> None:
        """``ring`` is shared with the gateway (and its JWKS); this source never closes it."""
        self.settings = settings
        self._jwt = JwtSource(settings.jwt_settings(), keys=ring, on_cache=on_cache, clock=ring.clock)

    async def verify(self, token: str) -> TokenFacts | TokenRejection:
        return self._signed_here(await self._jwt.verify(token))

    def verify_here(self, token: str, fingerprint: str | None = None) -> TokenFacts | TokenRejection | None:
        """A cached token's verdict without an await; None: ask :meth:`verify`."""
        facts = self._jwt.verify_here(token, fingerprint)
        return None if facts is None else self._signed_here(facts)

    def _signed_here(self, facts: TokenFacts | TokenRejection) -> TokenFacts | TokenRejection:
        """Refused when it claims to live longer than this issuer ever signs."""
        if isinstance(facts, TokenFacts):
            assert facts.expires_at is not None and facts.issued_at is not None  # exp and iat are required
            if facts.expires_at - facts.issued_at > self.settings.issuer.access_token_max_lifetime:
                return TokenRejection(Reason.MALFORMED_TOKEN, "the token lives longer than this issuer ever signs")
        return facts

    async def close(self) -> None:
        await self._jwt.close()
