"""The jwt source: pinned algorithms and keys, claims checked, types picked, cache bounded by exp."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest

from proxy.reasons import Reason
from proxy.tokens.facts import TokenFacts, TokenRejection
from proxy.tokens.jwks import load_static_key
from proxy.tokens.jwt_source import JwtSource, JwtSourceSettings
from proxy.tokens.matchers import TypeRule, compile_conditions
from tests.tokens.keys import AUDIENCE, HS_SECRET, ISSUER, claims, private_pem, public_pem, sign

RULES = (
    TypeRule("admin", compile_conditions({"role": "admin"})),
    TypeRule("reader", compile_conditions({"role": "reader"})),
)
KEYS = {
    "HS256": ("h1", HS_SECRET),
    "RS256": ("r1", "rsa"),
    "PS256": ("r1", "rsa"),
    "ES256": ("e1", "p256"),
    "ES384": ("e3", "p384"),
    "EdDSA": ("d1", "ed25519"),
}


def settings(algorithms: tuple[str, ...] = ("HS256",), **overrides: Any) -> JwtSourceSettings:
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
    source = JwtSource(source_settings or settings(), **kwargs)
    try:
        return await source.verify(token)
    finally:
        await source.close()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def hand_made(header: dict[str, Any], payload: str | dict[str, Any], secret: bytes = HS_SECRET) -> str:
    """A token built byte by byte, for what PyJWT would refuse to produce."""
    body = payload if isinstance(payload, str) else json.dumps(payload)
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(body.encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64(signature)}"


@pytest.mark.parametrize("alg", list(KEYS))
async def test_each_algorithm_family_verifies(alg: str) -> None:
    facts = await verify(token_for(alg), settings((alg,)))
    assert isinstance(facts, TokenFacts)
    assert (facts.token_type, facts.subject) == ("reader", "alice")
    assert len(facts.token_hash) == 12


def reason(result: TokenFacts | TokenRejection) -> Reason:
    assert isinstance(result, TokenRejection), result
    return result.reason


async def test_alg_none_is_never_accepted() -> None:
    unsigned = f"{b64(json.dumps({'alg': 'none', 'typ': 'JWT'}).encode())}.{b64(json.dumps(claims()).encode())}."
    assert reason(await verify(unsigned)) is Reason.MALFORMED_TOKEN  # empty signature: not even a JWS
    unsigned_with_sig = unsigned + "AAAA"
    assert reason(await verify(unsigned_with_sig)) is Reason.ALGORITHM_NOT_ALLOWED
    for spelling in ("None", "NONE", "nOnE"):
        assert reason(await verify(hand_made({"alg": spelling}, claims()))) is Reason.ALGORITHM_NOT_ALLOWED


async def test_hs256_signed_with_the_rsa_public_key_is_refused() -> None:
    """The algorithm-confusion attack: the public PEM used as an HMAC secret."""
    forged = hand_made({"alg": "HS256", "kid": "r1"}, claims(), secret=public_pem("rsa"))
    result = await verify(forged, settings(("RS256",)))
    assert reason(result) is Reason.ALGORITHM_NOT_ALLOWED
    # Even with HS256 pinned too, the RSA key is never an HMAC secret.
    both = settings(("RS256", "HS256"))
    assert reason(await verify(forged, both)) in (Reason.BAD_SIGNATURE, Reason.UNKNOWN_KEY)
    forged_kid = hand_made({"alg": "HS256", "kid": "h1"}, claims(), secret=public_pem("rsa"))
    assert reason(await verify(forged_kid, both)) is Reason.BAD_SIGNATURE


@pytest.mark.parametrize(
    "body, reason_expected",
    [
        (claims(exp=int(time.time()) - 120), Reason.TOKEN_EXPIRED),
        (claims(nbf=int(time.time()) + 120), Reason.TOKEN_NOT_YET_VALID),
        (claims(iss="https://other/"), Reason.WRONG_ISSUER),
        (claims(iss=None), Reason.MISSING_CLAIM),
        (claims(aud="other"), Reason.WRONG_AUDIENCE),
        (claims(aud=None), Reason.MISSING_CLAIM),
        (claims(exp=None), Reason.MISSING_CLAIM),
        (claims(exp="2999999999"), Reason.MALFORMED_TOKEN),
        (claims(exp=True), Reason.MALFORMED_TOKEN),
        (claims(iat="yesterday"), Reason.MALFORMED_TOKEN),
        (claims(role="guest"), Reason.NO_TOKEN_TYPE),
        (claims(role=None), Reason.NO_TOKEN_TYPE),
    ],
    ids=[
        "expired", "not_yet_valid", "wrong_issuer", "missing_issuer", "wrong_audience", "missing_audience",
        "missing_exp", "exp_as_string", "exp_as_bool", "iat_as_string", "no_type_matches", "no_role_claim",
    ],
)
async def test_claims_are_checked(body: dict[str, Any], reason_expected: Reason) -> None:
    assert reason(await verify(token_for("HS256", body))) is reason_expected


async def test_leeway_is_honoured_on_exp_and_nbf() -> None:
    now = int(time.time())
    assert isinstance(await verify(token_for("HS256", claims(exp=now - 10))), TokenFacts)
    assert isinstance(await verify(token_for("HS256", claims(nbf=now + 10))), TokenFacts)
    assert reason(await verify(token_for("HS256", claims(exp=now - 10)), settings(leeway=0))) is Reason.TOKEN_EXPIRED


async def test_audience_list_and_required_claims() -> None:
    multi = settings(audience=("other", AUDIENCE))
    assert isinstance(await verify(token_for("HS256", claims(aud=["x", AUDIENCE])), multi), TokenFacts)
    needs_tenant = settings(required_claims=("tenant",))
    assert reason(await verify(token_for("HS256"), needs_tenant)) is Reason.MISSING_CLAIM
    assert isinstance(await verify(token_for("HS256", claims(tenant="t1")), needs_tenant), TokenFacts)


async def test_no_audience_configured_accepts_any_audience() -> None:
    assert isinstance(await verify(token_for("HS256", claims(aud="whatever")), settings(audience=())), TokenFacts)


@pytest.mark.parametrize(
    "token, reason_expected",
    [
        ("not-a-jwt", Reason.MALFORMED_TOKEN),
        ("a.b.c.d.e", Reason.MALFORMED_TOKEN),  # a JWE
        ("a.b", Reason.MALFORMED_TOKEN),
        ("x" * 9000, Reason.MALFORMED_TOKEN),
        ("eyJhbGciOiJIUzI1NiJ9.e30=.c2ln", Reason.MALFORMED_TOKEN),  # padding
        ("e30.e30.c2ln", Reason.ALGORITHM_NOT_ALLOWED),  # header without alg
        ("bm90IGpzb24.e30.c2ln", Reason.MALFORMED_TOKEN),  # header not JSON
    ],
)
async def test_malformed_tokens(token: str, reason_expected: Reason) -> None:
    assert reason(await verify(token)) is reason_expected


async def test_wrong_signature_unknown_kid_and_unpinned_algorithm() -> None:
    good = token_for("HS256")
    header, payload, signature = good.split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    assert reason(await verify(f"{header}.{payload}.{flipped}")) is Reason.BAD_SIGNATURE
    assert reason(await verify(sign(claims(), "HS256", kid="other"))) is Reason.UNKNOWN_KEY
    assert reason(await verify(sign(claims(), "HS256"))) is Reason.UNKNOWN_KEY  # no kid, and every key has one
    assert reason(await verify(token_for("RS256"))) is Reason.ALGORITHM_NOT_ALLOWED
    assert reason(await verify(hand_made({"alg": "HS384", "kid": "h1"}, claims()))) is Reason.ALGORITHM_NOT_ALLOWED


async def test_tampered_payload_fails_the_signature() -> None:
    header, _, signature = token_for("HS256").split(".")
    admin = b64(json.dumps(claims(role="admin")).encode())
    assert reason(await verify(f"{header}.{admin}.{signature}")) is Reason.BAD_SIGNATURE


async def test_duplicate_claims_and_crit_header_are_refused() -> None:
    body = json.dumps(claims())[:-1] + ', "role": "admin"}'
    assert reason(await verify(hand_made({"alg": "HS256", "kid": "h1"}, body))) is Reason.MALFORMED_TOKEN
    assert reason(await verify(hand_made({"alg": "HS256", "kid": "h1", "crit": ["exp"]}, claims()))) is Reason.MALFORMED_TOKEN
    assert reason(await verify(hand_made({"alg": "HS256", "kid": "h1"}, "[1, 2]"))) is Reason.MALFORMED_TOKEN


async def test_jku_and_embedded_jwk_headers_are_never_used() -> None:
    forged = sign(claims(), "RS256", "rsa", kid="attacker", jku="https://evil.example/jwks.json")
    assert reason(await verify(forged, settings(("HS256", "RS256")))) is Reason.UNKNOWN_KEY


async def test_expected_typ() -> None:
    at_jwt = settings(expected_typ="at+jwt")
    assert isinstance(await verify(token_for("HS256", typ="at+jwt"), at_jwt), TokenFacts)
    assert isinstance(await verify(token_for("HS256", typ="application/AT+JWT"), at_jwt), TokenFacts)
    assert reason(await verify(token_for("HS256"), at_jwt)) is Reason.MALFORMED_TOKEN  # typ JWT


async def test_narrowing_claims() -> None:
    narrowing = settings(path_prefixes_claim="allowed_endpoints", client_ips_claim="allowed_ips")
    facts = await verify(
        token_for("HS256", claims(allowed_endpoints=["/Client/", "/Job"], allowed_ips=["10.0.0.0/8", "1.1.1.1 – 1.1.1.5"])),
        narrowing,
    )
    assert isinstance(facts, TokenFacts)
    assert facts.path_prefixes == ("/Client", "/Job")
    assert facts.client_ips is not None and len(facts.client_ips) == 2
    plain = await verify(token_for("HS256"), narrowing)
    assert isinstance(plain, TokenFacts) and plain.path_prefixes is None and plain.client_ips is None


@pytest.mark.parametrize(
    "extra",
    [
        {"allowed_endpoints": "/Client"},
        {"allowed_endpoints": ["Client"]},
        {"allowed_endpoints": ["/a/../b"]},
        {"allowed_endpoints": ["/a//b"]},
        {"allowed_endpoints": ["/a%2Fb"]},
        {"allowed_endpoints": ["/a?x"]},
        {"allowed_ips": ["10.0.0.300"]},
        {"allowed_ips": [10]},
        {"allowed_ips": "010.0.0.1"},
    ],
)
async def test_malformed_narrowing_claims_refuse_the_token(extra: dict[str, Any]) -> None:
    narrowing = settings(path_prefixes_claim="allowed_endpoints", client_ips_claim="allowed_ips")
    assert reason(await verify(token_for("HS256", claims(**extra)), narrowing)) is Reason.MALFORMED_TOKEN


async def test_verified_tokens_are_cached_but_never_past_exp() -> None:
    now = [time.time()]
    lookups: list[bool] = []
    source = JwtSource(settings(leeway=60.0), on_cache=lookups.append, clock=lambda: now[0])
    token = token_for("HS256", claims(exp=int(now[0]) + 20))
    assert isinstance(await source.verify(token), TokenFacts)
    assert isinstance(await source.verify(token), TokenFacts)
    assert lookups == [False, True]
    now[0] += 21  # past exp, within the leeway: the cache entry is gone
    await source.verify(token)
    assert lookups[-1] is False


async def test_cache_respects_max_seconds_and_size() -> None:
    now = [time.time()]
    lookups: list[bool] = []
    source = JwtSource(settings(cache_size=2, cache_max_seconds=5.0), on_cache=lookups.append, clock=lambda: now[0])
    tokens = [token_for("HS256", claims(jti=str(i))) for i in range(3)]
    for token in tokens:
        await source.verify(token)
    await source.verify(tokens[0])  # evicted by the bound of 2
    assert lookups[-1] is False
    await source.verify(tokens[0])
    assert lookups[-1] is True
    now[0] += 6
    await source.verify(tokens[0])
    assert lookups[-1] is False
    assert len(source._cache) <= 2


async def test_rejections_never_carry_the_token() -> None:
    token = token_for("HS256", claims(role="guest"))
    signature = token.split(".")[2]
    for candidate in (token, token[:-3] + "xyz", token + ".x"):
        result = await verify(candidate)
        assert isinstance(result, TokenRejection)
        assert signature not in result.detail and candidate not in result.detail


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"algorithms": ()}, "pin at least one"),
        ({"algorithms": ("HS256", "none")}, "not supported"),
        ({"static_keys": ()}, "'keys' or a 'jwks_url'"),
        ({"algorithms": ("RS256",), "jwks_url": "https://idp.example/jwks"}, "not in 'algorithms'"),
        ({"jwks_url": "http://idp.example/jwks"}, "https"),
        ({"jwks_url": "https://idp.example/jwks"}, "public-key algorithm"),
        ({"type_rules": ()}, "at least one token type"),
    ],
)
def test_settings_are_validated(overrides: dict[str, Any], message: str) -> None:
    hs256 = load_static_key(kid="h1", algorithm="HS256", material=HS_SECRET)
    values: dict[str, Any] = {"algorithms": ("HS256",), "static_keys": (hs256,), "type_rules": RULES, **overrides}
    with pytest.raises(ValueError, match=message):
        JwtSourceSettings(**values)


@pytest.mark.parametrize(
    "algorithm, material, message",
    [
        ("HS256", b"short", "at least 32 bytes"),
        ("HS512", b"s" * 48, "at least 64 bytes"),
        ("HS256", public_pem("rsa"), "not a PEM"),
        ("RS256", private_pem("rsa"), "private key"),
        ("RS256", public_pem("rsa1024"), "at least 2048 bits"),
        ("RS256", public_pem("p256"), "needs an RSA public key"),
        ("ES384", public_pem("p256"), "needs curve secp384r1"),
        ("EdDSA", public_pem("p256"), "Ed25519"),
        ("ES256", b"garbage", "not a PEM public key"),
        ("XS256", b"x" * 64, "not supported"),
    ],
)
def test_static_keys_are_validated(algorithm: str, material: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_static_key(kid=None, algorithm=algorithm, material=material)
