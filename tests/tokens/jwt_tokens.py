"""Tokens, keys and a verify helper for the jwt source's tests: one source per check, rejections checked for leaks."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

from proxy.reasons import Reason
from proxy.token_facts import TokenFacts, TokenRejection
from proxy.tokens.jwt_source import JwtSource, JwtSourceSettings
from proxy.tokens.matchers import TypeRule, compile_conditions
from proxy.verification_keys import load_static_key
from tests.tokens.keys import (
    AUDIENCE,
    HS_SECRET,
    ISSUER,
    assert_no_token_in,
    claims,
    public_pem,
    sign,
)

RULES = (
    TypeRule("admin", compile_conditions({"role": "admin"})),
    TypeRule("reader", compile_conditions({"role": "reader"})),
)
# algorithm -> (kid, HMAC secret or the kind of key in tests.tokens.keys)
KEYS: dict[str, tuple[str, bytes | str]] = {
    "HS256": ("h1", HS_SECRET),
    "RS256": ("r1", "rsa"),
    "PS256": ("r1", "rsa"),
    "ES256": ("e1", "p256"),
    "ES384": ("e3", "p384"),
    "EdDSA": ("d1", "ed25519"),
}


def settings(algorithms: tuple[str, ...] = ("HS256",), **overrides: Any) -> JwtSourceSettings:
    """A source pinning ``algorithms``, each with its key from KEYS."""
    keys = []
    for alg in algorithms:
        kid, material = KEYS[alg]
        raw = material if isinstance(material, bytes) else public_pem(material)
        keys.append(load_static_key(kid=kid, algorithm=alg, material=raw))
    values: dict[str, Any] = dict(
        algorithms=algorithms, static_keys=tuple(keys), issuer=ISSUER, audience=(AUDIENCE,), leeway=30.0, type_rules=RULES
    )
    values.update(overrides)
    return JwtSourceSettings(**values)


def token_for(alg: str, body: dict[str, Any] | None = None, **headers: Any) -> str:
    kid, material = KEYS[alg]
    return sign(body or claims(), alg, None if isinstance(material, bytes) else material, kid=kid, **headers)


async def verify(token: str, source_settings: JwtSourceSettings | None = None, **kwargs: Any) -> TokenFacts | TokenRejection:
    """Verify with a fresh source; every rejection is also checked for leaking the token."""
    source = JwtSource(source_settings or settings(), **kwargs)
    try:
        result = await source.verify(token)
    finally:
        await source.close()
    if isinstance(result, TokenRejection):
        assert_no_token_in(result.detail, token)
    return result


def reason(result: TokenFacts | TokenRejection) -> Reason:
    assert isinstance(result, TokenRejection), result
    return result.reason


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: str | dict[str, Any], secret: bytes | None = HS_SECRET) -> str:
    """A token built byte by byte, for what PyJWT would refuse to produce; ``secret=None`` leaves it unsigned."""
    body = payload if isinstance(payload, str) else json.dumps(payload)
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(body.encode())}"
    if secret is None:
        return f"{signing_input}."
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def now() -> int:
    return int(time.time())
