"""``labgate token dev``: a development token that an upstream's ``jwt`` source accepts.

Trying labgate in front of one's own appliance needs a token the config
accepts, before any identity provider is wired up. For a ``jwt`` source with an
HMAC key (HS256/384/512, the shared secret in the config's ``keys``) labgate
can sign one itself: the configured ``iss`` and ``aud``, an ``iat`` and ``exp``,
and claims that meet the ``types`` rule of the requested token type. The token
carries ``dev: true`` and the command says on stderr that it is for
development: anyone holding the shared secret can make the same tokens, which
is why production sources verify public keys (``jwks_url``) instead.

Before printing, the token is verified by the upstream's own source; a token
the source would refuse, or would give another type, is never printed.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from proxy.errors import LabgateError
from proxy.reasons import Reason
from proxy.token_facts import TokenFacts
from proxy.tokens.introspect import IntrospectSourceSettings
from proxy.tokens.issuer_source import IssuerSourceSettings
from proxy.tokens.jwt_source import JwtSource, JwtSourceSettings
from proxy.tokens.matchers import Condition
from proxy.tokens.observe import ObserveSourceSettings
from proxy.tokens.settings import TokenSourceSettings
from proxy.verification_keys import ALGORITHM_FAMILIES, VerificationKey

DEV_CLAIM = "dev"  # marks every development token: {"dev": true}
DEFAULT_LIFETIME = 3600.0
MAX_LIFETIME = 86400.0


class DevTokenRefused(LabgateError):
    """No development token can be made for this upstream and type; the message says what to do instead."""

    reason = Reason.CONFIG_PROBLEM


@dataclass(frozen=True)
class DevTokenRequest:
    """What to mint: for which token type, whom, how long, and extra claims (``--claim``)."""

    token_type: str
    subject: str = "dev"
    lifetime: float = DEFAULT_LIFETIME
    extra_claims: Mapping[str, Any] | None = None


def signing_key(settings: TokenSourceSettings, upstream: str) -> VerificationKey:
    """The source's first shared secret; other sources get a message naming where their tokens come from."""
    if isinstance(settings, IssuerSourceSettings):
        raise DevTokenRefused(
            f"upstream {upstream!r} accepts labgate's own tokens: mint one with "
            f"`labgate token issue --config FILE --upstream {upstream} --subject NAME --token-type TYPE`"
        )
    if isinstance(settings, ObserveSourceSettings):
        raise DevTokenRefused(
            f"upstream {upstream!r} accepts the appliance's own opaque tokens: get one by posting to the "
            "appliance's token endpoint through labgate (token_source.token_endpoint)"
        )
    if isinstance(settings, IntrospectSourceSettings):
        raise DevTokenRefused(
            f"upstream {upstream!r} asks an authorization server about each token (introspect): get a token from it"
        )
    assert isinstance(settings, JwtSourceSettings)
    for key in settings.static_keys:
        if ALGORITHM_FAMILIES[key.algorithm] == "hmac":
            return key
    raise DevTokenRefused(
        f"upstream {upstream!r} verifies with public keys only ({', '.join(settings.algorithms)}): labgate cannot "
        "sign a token it accepts. Get one from the token's issuer, or for development add a shared secret to "
        "token_source.keys (algorithm: HS256, secret_file: ...) and list HS256 in algorithms"
    )


def dev_claims(settings: JwtSourceSettings, request: DevTokenRequest, now: float) -> dict[str, Any]:
    """Claims the source accepts as ``request.token_type``: the first ``types`` rule for it, met."""
    rule = next((r for r in settings.type_rules if r.token_type == request.token_type), None)
    if rule is None:
        known = ", ".join(dict.fromkeys(r.token_type for r in settings.type_rules))
        raise DevTokenRefused(f"the upstream's token source maps no claims to token type {request.token_type!r} (it maps: {known})")
    claims: dict[str, Any] = {}
    for condition in rule.conditions:
        _meet(claims, condition)
    claims.update({name: DEV_CLAIM for name in settings.required_claims if name not in claims})
    claims.update(
        {
            settings.subject_claim: request.subject,
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now + request.lifetime),
            "jti": secrets.token_hex(8),
        }
    )
    if settings.issuer is not None:
        claims["iss"] = settings.issuer
    if settings.audience:
        claims["aud"] = settings.audience[0]
    claims.update(request.extra_claims or {})
    claims[DEV_CLAIM] = True
    return claims


def _meet(claims: dict[str, Any], condition: Condition) -> None:
    """Set the claim at ``condition.claim`` (a dotted path makes nested objects) so the condition holds."""
    if condition.operator == "present" and condition.value is False:
        return
    value: Any = {
        "equals": condition.value,
        "in": condition.value[0] if condition.operator == "in" else None,
        "contains": [condition.value],
        "present": DEV_CLAIM,
    }[condition.operator]
    *parents, last = condition.claim.split(".")
    target = claims
    for part in parents:
        target = target.setdefault(part, {})
    target[last] = value


async def mint_dev_token(settings: TokenSourceSettings, upstream: str, request: DevTokenRequest) -> str:
    """A signed development token, verified by the upstream's own source before it is returned."""
    key = signing_key(settings, upstream)
    assert isinstance(settings, JwtSourceSettings)
    if not 0 < request.lifetime <= MAX_LIFETIME:
        raise DevTokenRefused("a development token lives between 1 second and 24 hours (--lifetime)")
    headers = {"kid": key.kid} if key.kid else {}
    if settings.expected_typ:
        headers["typ"] = settings.expected_typ
    token = jwt.encode(dev_claims(settings, request, time.time()), key.key, algorithm=key.algorithm, headers=headers)
    source = JwtSource(settings)
    try:
        verified = await source.verify(token)
    finally:
        await source.close()
    if not isinstance(verified, TokenFacts):
        raise DevTokenRefused(f"the upstream's token source would refuse the token: {verified.reason.code}: {verified.detail}")
    if verified.token_type != request.token_type:
        raise DevTokenRefused(
            f"the upstream's token source would take the token as {verified.token_type!r}, not {request.token_type!r}: "
            "an earlier types rule matches the same claims"
        )
    return token


def parse_claim(text: str) -> tuple[str, Any]:
    """``--claim NAME=VALUE``: VALUE as JSON when it parses (``'["/Client"]'``, ``true``), else a string."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise DevTokenRefused(f"--claim {text!r}: write NAME=VALUE, e.g. --claim 'scope=read write'")
    if name == DEV_CLAIM:
        raise DevTokenRefused(f"--claim: {DEV_CLAIM!r} is set by labgate on every development token")
    try:
        return name, json.loads(value)
    except ValueError:
        return name, value
