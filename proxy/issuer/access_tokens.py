"""What a labgate access token says, and minting one with the key ring's active key.

A JWT access token after RFC 9068: header ``typ: at+jwt`` (section 2.1, so it
can never pass for an ID token or another JWT), ``alg`` and ``kid`` of the
signing key; claims ``iss``, ``sub``, ``aud`` (the upstream it is for),
``iat``, ``exp``, ``jti``, ``client_id`` and ``scope`` when there is one
(section 2.2).  labgate's own claims:

* ``token_type``: the pack token type that governs the token, the only
  thing the ``issuer`` source reads the type from;
* ``path_prefixes``, ``client_ips``: the token's own endpoint list and IP
  allowlist (a Commvault custom scope, a service account's allowlist), which
  narrow its type and never widen it;
* ``chain``: the refresh chain a token was minted in, when it was; revoking
  the chain (a refresh token used twice) kills every token minted in it.

A token never outlives ``access_token_max_lifetime``: that bound is what lets
a retired key be forgotten, so minting refuses anything longer and the
source refuses any token whose ``exp - iat`` exceeds it.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass, field

import jwt

from proxy.issuer.ring import SigningKey
from proxy.issuer.settings import IssuerSettings
from proxy.token_facts import token_fingerprint
from proxy.token_narrowing import (
    MalformedNarrowing,
    client_ips_claim,
    path_prefixes_claim,
)

ACCESS_TOKEN_TYP = "at+jwt"
TOKEN_TYPE_CLAIM = "token_type"
PATH_PREFIXES_CLAIM = "path_prefixes"
CLIENT_IPS_CLAIM = "client_ips"
CHAIN_CLAIM = "chain"


@dataclass(frozen=True)
class AccessTokenGrant:
    """Everything a token says about whom it is for and what it may do.

    ``audience`` is the upstream's audience (its name unless its source says
    otherwise); ``token_type`` must be a type of that upstream's pack;
    ``lifetime`` is in seconds; ``chain`` names the refresh chain the
    token belongs to, if any.
    """

    subject: str
    client_id: str
    token_type: str
    audience: str
    lifetime: float
    scope: tuple[str, ...] = ()
    path_prefixes: tuple[str, ...] | None = None
    client_ips: tuple[str, ...] | None = None
    chain: str | None = None


@dataclass(frozen=True)
class MintedToken:
    """A signed token and what a store record of it needs; ``token`` is secret, never logged."""

    token: str = field(repr=False)
    jti: str
    kid: str
    issued_at: int
    expires_at: int

    @property
    def fingerprint(self) -> str:
        """How stores and revocations name the token (its full sha256)."""
        return token_fingerprint(self.token)


def mint_access_token(key: SigningKey, settings: IssuerSettings, grant: AccessTokenGrant, *, now: float) -> MintedToken:
    """Sign ``grant`` with ``key``; ValueError when the grant could not pass labgate's own checks."""
    _check_grant(grant, settings)
    issued_at = math.floor(now)
    expires_at = issued_at + math.floor(grant.lifetime)
    jti = secrets.token_urlsafe(18)
    claims: dict[str, object] = {
        "iss": settings.url,
        "sub": grant.subject,
        "aud": grant.audience,
        "iat": issued_at,
        "exp": expires_at,
        "jti": jti,
        "client_id": grant.client_id,
        TOKEN_TYPE_CLAIM: grant.token_type,
    }
    if grant.scope:
        claims["scope"] = " ".join(grant.scope)  # RFC 8693 section 4.2 / RFC 9068 section 2.2.3
    if grant.path_prefixes is not None:
        claims[PATH_PREFIXES_CLAIM] = list(grant.path_prefixes)
    if grant.client_ips is not None:
        claims[CLIENT_IPS_CLAIM] = list(grant.client_ips)
    if grant.chain is not None:
        claims[CHAIN_CLAIM] = grant.chain
    token = jwt.encode(
        claims, key.private_key, algorithm=key.algorithm, headers={"kid": key.kid, "typ": ACCESS_TOKEN_TYP}
    )
    return MintedToken(token, jti, key.kid, issued_at, expires_at)


def _check_grant(grant: AccessTokenGrant, settings: IssuerSettings) -> None:
    """Never sign what the ``issuer`` source would refuse, nor what would outlive the key's grace."""
    if not 1 <= grant.lifetime <= settings.access_token_max_lifetime:
        raise ValueError(
            f"an access token lives between 1 s and the issuer's access_token_max_lifetime "
            f"({settings.access_token_max_lifetime:g} s), not {grant.lifetime:g} s"
        )
    for name in ("subject", "client_id", "token_type", "audience"):
        if not getattr(grant, name):
            raise ValueError(f"an access token needs a {name}")
    if grant.chain == "":
        raise ValueError("a chain is named by a non-empty id: give None for a token outside any chain")
    if any(not word or " " in word for word in grant.scope):
        raise ValueError("scope values are single non-empty words (RFC 6749 section 3.3)")
    if grant.path_prefixes == () or grant.client_ips == ():
        raise ValueError("an empty path_prefixes or client_ips list would allow nothing: give None to not narrow")
    try:
        path_prefixes_claim({PATH_PREFIXES_CLAIM: list(grant.path_prefixes or ())}, PATH_PREFIXES_CLAIM)
        client_ips_claim({CLIENT_IPS_CLAIM: list(grant.client_ips or ())}, CLIENT_IPS_CLAIM)
    except MalformedNarrowing as exc:
        raise ValueError(str(exc)) from None
