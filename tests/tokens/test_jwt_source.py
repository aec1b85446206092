"""The jwt source: pinned algorithms and keys, claims checked, types picked, cache bounded by exp."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import ipaddress
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from proxy.reasons import Reason
from proxy.token_facts import TokenFacts, TokenRejection
from proxy.tokens.jwt_source import JwtSource, JwtSourceSettings
from proxy.tokens.matchers import TypeRule, compile_conditions
from proxy.verification_keys import load_static_key
from tests.clock import Clock
from tests.tokens.keys import (
    AUDIENCE,
    HS_SECRET,
    ISSUER,
    assert_no_token_in,
    certificate_pem,
    claims,
    private_pem,
    public_jwk,
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


# -- algorithms and keys ----------------------------------------------------------


@pytest.mark.parametrize("alg", list(KEYS))
async def test_each_algorithm_family_verifies(alg: str) -> None:
    facts = await verify(token_for(alg), settings((alg,)))
    assert isinstance(facts, TokenFacts)
    assert (facts.token_type, facts.subject) == ("reader", "alice")
    assert len(facts.token_hash) == 12
    assert facts.claims["iss"] == ISSUER


@pytest.mark.parametrize(
    "token",
    [
        hand_made({"alg": "none", "typ": "JWT"}, claims(), secret=None),
        hand_made({"alg": "None"}, claims(), secret=None),
        hand_made({"alg": "NONE"}, claims(), secret=None),
        hand_made({"alg": "nOnE", "kid": "h1"}, claims(), secret=None),
        hand_made({"alg": "none", "kid": "h1"}, claims()),  # with a signature after all
    ],
    ids=["unsigned", "unsigned_None", "unsigned_NONE", "unsigned_nOnE_with_kid", "none_with_signature"],
)
async def test_alg_none_is_never_accepted(token: str) -> None:
    assert reason(await verify(token, settings(("HS256", "RS256")))) is Reason.ALGORITHM_NOT_ALLOWED


async def test_an_empty_signature_is_malformed_even_with_a_pinned_alg() -> None:
    unsigned = hand_made({"alg": "HS256", "kid": "h1"}, claims(), secret=None)
    assert reason(await verify(unsigned)) is Reason.MALFORMED_TOKEN


HS256_FROM_RSA_PEM = hand_made({"alg": "HS256", "kid": "r1"}, claims(role="admin"), secret=public_pem("rsa"))


@pytest.mark.parametrize(
    "source, token, expected",
    [
        (lambda: settings(("RS256",)), HS256_FROM_RSA_PEM, Reason.ALGORITHM_NOT_ALLOWED),
        (lambda: settings(("RS256", "HS256")), HS256_FROM_RSA_PEM, Reason.UNKNOWN_KEY),
        (
            lambda: settings(("RS256", "HS256")),
            hand_made({"alg": "HS256", "kid": "h1"}, claims(role="admin"), secret=public_pem("rsa")),
            Reason.BAD_SIGNATURE,
        ),
        (
            lambda: settings(
                ("RS256", "HS256"),
                static_keys=(
                    load_static_key(kid=None, algorithm="RS256", material=public_pem("rsa")),
                    load_static_key(kid=None, algorithm="HS256", material=HS_SECRET),
                ),
            ),
            hand_made({"alg": "HS256"}, claims(role="admin"), secret=public_pem("rsa").strip()),
            Reason.BAD_SIGNATURE,
        ),
    ],
    ids=["only_rs256_pinned", "hs256_pinned_kid_of_rsa_key", "hs256_pinned_kid_of_hmac_key", "keys_without_kids"],
)
async def test_hs256_signed_with_the_rsa_public_key_is_refused(source: Any, token: str, expected: Reason) -> None:
    """Algorithm confusion (RFC 8725 section 2.1): the public PEM used as an HMAC secret."""
    assert reason(await verify(token, source())) is expected


async def test_wrong_signature_unknown_kid_and_unpinned_algorithm() -> None:
    header, payload, signature = token_for("HS256").split(".")
    flipped = signature[:-2] + ("AA" if signature[-2:] != "AA" else "BB")
    assert reason(await verify(f"{header}.{payload}.{flipped}")) is Reason.BAD_SIGNATURE
    assert reason(await verify(sign(claims(), "HS256", kid="other"))) is Reason.UNKNOWN_KEY
    assert reason(await verify(sign(claims(), "HS256"))) is Reason.UNKNOWN_KEY  # no kid, and every key has one
    assert reason(await verify(token_for("RS256"))) is Reason.ALGORITHM_NOT_ALLOWED
    assert reason(await verify(hand_made({"alg": "HS384", "kid": "h1"}, claims()))) is Reason.ALGORITHM_NOT_ALLOWED
    assert reason(await verify(hand_made({"alg": "hs256", "kid": "h1"}, claims()))) is Reason.ALGORITHM_NOT_ALLOWED


async def test_a_key_without_kid_serves_tokens_with_any_kid() -> None:
    anonymous = settings(static_keys=(load_static_key(kid=None, algorithm="HS256", material=HS_SECRET),))
    assert isinstance(await verify(sign(claims(), "HS256", kid="whatever"), anonymous), TokenFacts)
    assert isinstance(await verify(sign(claims(), "HS256"), anonymous), TokenFacts)


async def test_tampered_payload_fails_the_signature() -> None:
    header, _, signature = token_for("HS256").split(".")
    admin = b64(json.dumps(claims(role="admin")).encode())
    assert reason(await verify(f"{header}.{admin}.{signature}")) is Reason.BAD_SIGNATURE


@pytest.mark.parametrize(
    "headers, expected",
    [
        ({"kid": "attacker", "jku": "https://evil.example/jwks.json"}, Reason.UNKNOWN_KEY),
        ({"kid": "attacker", "x5u": "https://evil.example/cert.pem"}, Reason.UNKNOWN_KEY),
        ({"kid": "attacker", "jwk": public_jwk("attacker_rsa")}, Reason.UNKNOWN_KEY),
        ({"kid": "r1", "jwk": public_jwk("attacker_rsa")}, Reason.BAD_SIGNATURE),  # our r1 key is used, not theirs
        ({"kid": "r1", "x5c": [base64.b64encode(b"not used").decode()]}, Reason.BAD_SIGNATURE),
    ],
    ids=["jku", "x5u", "embedded_jwk", "embedded_jwk_with_our_kid", "x5c_with_our_kid"],
)
async def test_key_headers_are_never_used(headers: dict[str, Any], expected: Reason) -> None:
    forged = sign(claims(role="admin"), "RS256", "attacker_rsa", **headers)
    assert reason(await verify(forged, settings(("HS256", "RS256")))) is expected


# -- claims -----------------------------------------------------------------------


def now() -> int:
    return int(time.time())


Claims = Callable[[], dict[str, Any]]  # built when the test runs: collection may be long before


@pytest.mark.parametrize(
    "body, expected",
    [
        (lambda: claims(exp=now() - 120), Reason.TOKEN_EXPIRED),
        (lambda: claims(nbf=now() + 120), Reason.TOKEN_NOT_YET_VALID),
        (lambda: claims(iat=now() + 120), Reason.TOKEN_NOT_YET_VALID),
        (lambda: claims(iss="https://other/"), Reason.WRONG_ISSUER),
        (lambda: claims(iss=None), Reason.MISSING_CLAIM),
        (lambda: claims(aud="other"), Reason.WRONG_AUDIENCE),
        (lambda: claims(aud=["other", "another"]), Reason.WRONG_AUDIENCE),
        (lambda: claims(aud=None), Reason.MISSING_CLAIM),
        (lambda: claims(exp=None), Reason.MISSING_CLAIM),
        (lambda: claims(exp=str(now() + 300)), Reason.MALFORMED_TOKEN),
        (lambda: claims(exp=True), Reason.MALFORMED_TOKEN),
        (lambda: claims(nbf=False), Reason.MALFORMED_TOKEN),
        (lambda: claims(exp=float("nan")), Reason.MALFORMED_TOKEN),
        (lambda: claims(exp=float("inf")), Reason.MALFORMED_TOKEN),
        (lambda: claims(iat="yesterday"), Reason.MALFORMED_TOKEN),
        (lambda: claims(sub=42), Reason.MALFORMED_TOKEN),
        (lambda: claims(role="guest"), Reason.NO_TOKEN_TYPE),
        (lambda: claims(role=None), Reason.NO_TOKEN_TYPE),
    ],
    ids=[
        "expired", "nbf_in_future", "iat_in_future", "wrong_issuer", "missing_issuer", "wrong_audience",
        "wrong_audience_list", "missing_audience", "missing_exp", "exp_as_string", "exp_as_bool", "nbf_as_bool",
        "exp_nan", "exp_infinity", "iat_as_string", "sub_not_a_string", "no_type_matches", "no_role_claim",
    ],
)
async def test_claims_are_checked(body: Claims, expected: Reason) -> None:
    assert reason(await verify(token_for("HS256", body()))) is expected


async def test_missing_claim_detail_names_the_claim() -> None:
    result = await verify(token_for("HS256", claims(iss=None)))
    assert isinstance(result, TokenRejection) and "'iss'" in result.detail


@pytest.mark.parametrize(
    "claim, offset, leeway, expected",
    [
        ("exp", -10, 30.0, None),
        ("nbf", 10, 30.0, None),
        ("exp", -10, 0.0, Reason.TOKEN_EXPIRED),
        ("nbf", 10, 0.0, Reason.TOKEN_NOT_YET_VALID),
    ],
    ids=["expired_within_leeway", "nbf_within_leeway", "expired_no_leeway", "nbf_no_leeway"],
)
async def test_leeway_is_honoured_on_exp_and_nbf(claim: str, offset: int, leeway: float, expected: Reason | None) -> None:
    result = await verify(token_for("HS256", claims(**{claim: now() + offset})), settings(leeway=leeway))
    if expected is None:
        assert isinstance(result, TokenFacts)
    else:
        assert reason(result) is expected


async def test_audience_list_and_required_claims() -> None:
    multi = settings(audience=("other", AUDIENCE))
    assert isinstance(await verify(token_for("HS256", claims(aud=["x", AUDIENCE])), multi), TokenFacts)
    assert isinstance(await verify(token_for("HS256", claims(aud="other")), multi), TokenFacts)
    needs_tenant = settings(required_claims=("tenant",))
    assert reason(await verify(token_for("HS256"), needs_tenant)) is Reason.MISSING_CLAIM
    assert isinstance(await verify(token_for("HS256", claims(tenant="t1")), needs_tenant), TokenFacts)


async def test_no_issuer_or_audience_configured_accepts_any() -> None:
    open_source = settings(audience=(), issuer=None)
    assert isinstance(await verify(token_for("HS256", claims(aud="whatever", iss="anyone")), open_source), TokenFacts)
    assert isinstance(await verify(token_for("HS256", claims(aud=None, iss=None)), open_source), TokenFacts)


async def test_subject_claim_is_configurable() -> None:
    facts = await verify(token_for("HS256", claims(upn="bob@corp")), settings(subject_claim="upn"))
    assert isinstance(facts, TokenFacts) and facts.subject == "bob@corp"
    facts = await verify(token_for("HS256", claims(upn=["not", "a", "string"])), settings(subject_claim="upn"))
    assert isinstance(facts, TokenFacts) and facts.subject is None


# -- shape and header -------------------------------------------------------------


GOOD = token_for("HS256")
HEADER, PAYLOAD, SIGNATURE = GOOD.split(".")
DEEP = "[" * 1200 + "]" * 1200  # past the JSON parser's nesting limit, within max_token_bytes


@pytest.mark.parametrize(
    "token, expected",
    [
        ("not-a-jwt", Reason.MALFORMED_TOKEN),
        ("", Reason.MALFORMED_TOKEN),
        (f"{HEADER}.{PAYLOAD}", Reason.MALFORMED_TOKEN),
        (f"{HEADER}.{PAYLOAD}.{SIGNATURE}.{SIGNATURE}.{SIGNATURE}", Reason.MALFORMED_TOKEN),
        (f"{HEADER}..{SIGNATURE}", Reason.MALFORMED_TOKEN),
        (f".{PAYLOAD}.{SIGNATURE}", Reason.MALFORMED_TOKEN),
        (f"{HEADER}.{PAYLOAD}.{SIGNATURE}=", Reason.MALFORMED_TOKEN),
        (f"{HEADER}=.{PAYLOAD}.{SIGNATURE}", Reason.MALFORMED_TOKEN),
        (f" {GOOD}", Reason.MALFORMED_TOKEN),
        (f"{GOOD}\n", Reason.MALFORMED_TOKEN),
        (f"{HEADER}.{PAYLOAD[:10]} {PAYLOAD[10:]}.{SIGNATURE}", Reason.MALFORMED_TOKEN),
        (f"{HEADER}.{PAYLOAD}.{SIGNATURE[:-1]}+", Reason.MALFORMED_TOKEN),  # standard, not url-safe, base64
        (token_for("HS256", claims(padding="x" * 8200)), Reason.TOKEN_TOO_LARGE),
        (f"{b64(b'{}')}.{PAYLOAD}.{SIGNATURE}", Reason.ALGORITHM_NOT_ALLOWED),  # header without alg
        (f"{b64(b'not json')}.{PAYLOAD}.{SIGNATURE}", Reason.MALFORMED_TOKEN),
        (f"{b64(b'[1]')}.{PAYLOAD}.{SIGNATURE}", Reason.MALFORMED_TOKEN),
        (f"{b64(DEEP.encode())}.{PAYLOAD}.{SIGNATURE}", Reason.MALFORMED_TOKEN),
        (f"{HEADER}.{PAYLOAD}x.{SIGNATURE}", Reason.MALFORMED_TOKEN),  # payload not decodable base64url
    ],
    ids=[
        "not_a_jwt", "empty", "two_parts", "five_parts_jwe", "empty_payload", "empty_header", "padded_signature",
        "padded_header", "leading_space", "trailing_newline", "space_inside", "plus_sign", "oversized",
        "header_without_alg", "header_not_json", "header_not_an_object", "header_deeply_nested", "payload_bad_base64",
    ],
)
async def test_malformed_tokens(token: str, expected: Reason) -> None:
    assert reason(await verify(token)) is expected


@pytest.mark.parametrize(
    "header, payload",
    [
        ({"alg": "HS256", "kid": "h1"}, json.dumps(claims())[:-1] + ', "role": "admin"}'),
        ({"alg": "HS256", "kid": "h1"}, json.dumps(claims())[:-1] + ', "exp": 9999999999}'),
        ({"alg": "HS256", "kid": "h1", "crit": ["exp"]}, claims()),
        ({"alg": "HS256", "kid": "h1", "crit": ["b64"], "b64": False}, claims()),
        ({"alg": "HS256", "kid": "h1"}, "[1, 2]"),
        ({"alg": "HS256", "kid": "h1"}, '"a string"'),
        ({"alg": "HS256", "kid": "h1"}, DEEP),
        ({"alg": "HS256", "kid": "h1"}, json.dumps(claims())[:-1] + ', "x": NaN}'),
        ({"alg": "HS256", "kid": 7}, claims()),
    ],
    ids=[
        "duplicate_role", "duplicate_exp", "crit_header", "crit_b64_unencoded_payload", "payload_array",
        "payload_string", "payload_deeply_nested", "payload_nan_constant", "kid_not_a_string",
    ],
)
async def test_payloads_and_headers_we_refuse_to_interpret(header: dict[str, Any], payload: str | dict[str, Any]) -> None:
    """Correctly signed, yet not something two parsers would read the same way."""
    assert reason(await verify(hand_made(header, payload))) is Reason.MALFORMED_TOKEN


@pytest.mark.parametrize(
    "typ, accepted",
    [("at+jwt", True), ("application/at+jwt", True), ("AT+JWT", True), ("JWT", False), (None, False)],
    ids=["exact", "application_prefix", "upper_case", "plain_jwt", "missing"],
)
async def test_expected_typ(typ: str | None, accepted: bool) -> None:
    """RFC 8725 section 3.11: explicit typing keeps an ID token from passing as an access token."""
    token = token_for("HS256", typ=typ) if typ else sign(claims(), "HS256", kid="h1", typ=None)
    result = await verify(token, settings(expected_typ="at+jwt"))
    if accepted:
        assert isinstance(result, TokenFacts)
    else:
        assert reason(result) is Reason.MALFORMED_TOKEN


# -- narrowing claims ---------------------------------------------------------------


NARROWING = dict(path_prefixes_claim="allowed_endpoints", client_ips_claim="allowed_ips")


async def test_narrowing_claims() -> None:
    body = claims(allowed_endpoints=["/Client/", "/Job", "/"], allowed_ips=["10.0.0.0/8", "192.0.2.1 - 192.0.2.5"])
    facts = await verify(token_for("HS256", body), settings(**NARROWING))
    assert isinstance(facts, TokenFacts)
    assert facts.path_prefixes == ("/Client", "/Job", "/")
    assert facts.client_ips is not None
    assert ipaddress.ip_address("10.1.2.3") in facts.client_ips
    assert ipaddress.ip_address("192.0.2.5") in facts.client_ips
    assert ipaddress.ip_address("192.0.2.6") not in facts.client_ips


async def test_a_single_address_string_narrows_too() -> None:
    facts = await verify(token_for("HS256", claims(allowed_ips="203.0.113.7")), settings(**NARROWING))
    assert isinstance(facts, TokenFacts) and facts.client_ips is not None
    assert ipaddress.ip_address("203.0.113.7") in facts.client_ips
    assert ipaddress.ip_address("203.0.113.8") not in facts.client_ips


async def test_absent_narrowing_claims_mean_no_narrowing() -> None:
    plain = await verify(token_for("HS256"), settings(**NARROWING))
    assert isinstance(plain, TokenFacts) and plain.path_prefixes is None and plain.client_ips is None
    unconfigured = await verify(token_for("HS256", claims(allowed_endpoints=["/x"], allowed_ips=["10.0.0.1"])))
    assert isinstance(unconfigured, TokenFacts) and unconfigured.path_prefixes is None and unconfigured.client_ips is None


@pytest.mark.parametrize(
    "extra",
    [
        {"allowed_endpoints": "/Client"},
        {"allowed_endpoints": ["Client"]},
        {"allowed_endpoints": [""]},
        {"allowed_endpoints": ["/a", 7]},
        {"allowed_endpoints": ["/a/../b"]},
        {"allowed_endpoints": ["/a/./b"]},
        {"allowed_endpoints": ["/a/.."]},
        {"allowed_endpoints": ["/a//b"]},
        {"allowed_endpoints": ["//a"]},
        {"allowed_endpoints": ["/a%2Fb"]},
        {"allowed_endpoints": ["/a?x"]},
        {"allowed_endpoints": ["/a#x"]},
        {"allowed_endpoints": ["/a b"]},
        {"allowed_endpoints": ["/a\\b"]},
        {"allowed_endpoints": ["/a\x00"]},
        {"allowed_ips": ["10.0.0.300"]},
        {"allowed_ips": [10]},
        {"allowed_ips": "010.0.0.1"},
        {"allowed_ips": {"net": "10.0.0.0/8"}},
        {"allowed_ips": ["10.0.0.5/8"]},
    ],
    ids=[
        "prefixes_not_a_list", "prefix_relative", "prefix_empty", "prefix_not_a_string", "prefix_dotdot",
        "prefix_dot", "prefix_trailing_dotdot", "prefix_double_slash", "prefix_leading_double_slash",
        "prefix_percent", "prefix_query", "prefix_fragment", "prefix_space", "prefix_backslash",
        "prefix_control_character", "ip_octet_too_big", "ip_not_a_string",
        "ip_leading_zero", "ips_a_mapping", "ip_network_with_host_bits",
    ],
)
async def test_malformed_narrowing_claims_refuse_the_token(extra: dict[str, Any]) -> None:
    assert reason(await verify(token_for("HS256", claims(**extra)), settings(**NARROWING))) is Reason.MALFORMED_TOKEN


# -- the cache ---------------------------------------------------------------------


async def test_verified_tokens_are_cached_but_never_past_exp_even_within_leeway() -> None:
    clock, lookups = Clock(), []
    source = JwtSource(settings(leeway=60.0), on_cache=lookups.append, clock=clock)
    token = token_for("HS256", claims(exp=int(clock.now) + 20))
    try:
        assert isinstance(await source.verify(token), TokenFacts)
        assert isinstance(await source.verify(token), TokenFacts)
        assert lookups == [False, True]
        clock.now += 21  # past exp, within the leeway: the cache entry is gone
        await source.verify(token)
        assert lookups[-1] is False
    finally:
        await source.close()


async def test_a_fractional_exp_is_cached_only_to_the_whole_second() -> None:
    """PyJWT compares int(exp); the cache must not keep a token the check would refuse."""
    clock, lookups = Clock(), []
    source = JwtSource(settings(leeway=0.0), on_cache=lookups.append, clock=clock)
    exp = math.floor(clock.now) + 20.9
    token = token_for("HS256", claims(exp=exp))
    try:
        await source.verify(token)
        clock.now = math.floor(exp) + 0.5
        await source.verify(token)
    finally:
        await source.close()
    assert lookups == [False, False]


async def test_a_cached_token_is_refused_once_it_really_expires() -> None:
    """Real time here: PyJWT reads the wall clock, so the whole path is exercised as in production."""
    lookups: list[bool] = []
    source = JwtSource(settings(leeway=0.0), on_cache=lookups.append)
    exp = math.ceil(time.time()) + 1
    token = token_for("HS256", claims(exp=exp))
    try:
        assert isinstance(await source.verify(token), TokenFacts)
        assert isinstance(await source.verify(token), TokenFacts)
        await asyncio.sleep(max(0.0, exp - time.time()) + 0.05)
        result = await source.verify(token)
    finally:
        await source.close()
    assert lookups == [False, True, False]
    assert reason(result) is Reason.TOKEN_EXPIRED


async def test_cache_respects_max_seconds_and_size() -> None:
    clock, lookups = Clock(), []
    source = JwtSource(settings(cache_size=2, cache_max_seconds=5.0), on_cache=lookups.append, clock=clock)
    tokens = [token_for("HS256", claims(jti=str(i))) for i in range(3)]
    try:
        for token in tokens:
            await source.verify(token)
        await source.verify(tokens[2])
        assert lookups[-1] is True
        await source.verify(tokens[0])  # evicted by the bound of 2
        assert lookups[-1] is False
        await source.verify(tokens[0])
        assert lookups[-1] is True
        clock.now += 6  # past max_seconds, long before exp
        await source.verify(tokens[0])
        assert lookups[-1] is False
    finally:
        await source.close()


async def test_rejections_are_not_cached() -> None:
    lookups: list[bool] = []
    source = JwtSource(settings(), on_cache=lookups.append)
    token = token_for("HS256", claims(role="guest"))
    try:
        assert reason(await source.verify(token)) is Reason.NO_TOKEN_TYPE
        assert reason(await source.verify(token)) is Reason.NO_TOKEN_TYPE
    finally:
        await source.close()
    assert lookups == [False, False]


async def test_rejections_never_carry_the_token() -> None:
    """Details go to clients and decision logs: not the token, nor a claim value copied from it."""
    token = token_for("HS256", claims(role="guest"))
    header, payload, signature = token.split(".")
    narrowing, typed = settings(**NARROWING), settings(expected_typ="at+jwt")
    candidates = [
        (token, narrowing),
        (f"{header}.{payload}.{signature[:-3]}xyz", narrowing),
        (f"{token}.{signature}", narrowing),
        (token_for("HS256", claims(exp=now() - 999)), narrowing),
        (token_for("HS256", claims(iss=signature)), narrowing),
        (token_for("HS256", claims(aud=signature)), narrowing),
        (token_for("HS256", claims(role=signature)), narrowing),
        (token_for("HS256", claims(allowed_ips=[signature])), narrowing),
        (token_for("HS256", claims(allowed_endpoints=[signature])), narrowing),
        (sign(claims(), "HS256", kid=signature), narrowing),
        (token_for("HS256", typ=signature), typed),
    ]
    for candidate, source in candidates:
        result = await verify(candidate, source)
        assert isinstance(result, TokenRejection)
        for part in (candidate, signature, *candidate.split(".")):
            assert part not in result.detail


# -- configuration -------------------------------------------------------------------


HS256_KEY = load_static_key(kid="h1", algorithm="HS256", material=HS_SECRET)
RS256_KEY = load_static_key(kid="r1", algorithm="RS256", material=public_pem("rsa"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"algorithms": ()}, "pin at least one"),
        ({"algorithms": ("HS256", "none")}, "not supported"),
        ({"algorithms": ("HS256", "NONE")}, "not supported"),
        ({"algorithms": ("HS256", "HS1")}, "not supported"),
        ({"static_keys": ()}, "'keys' or a 'jwks_url'"),
        ({"algorithms": ("RS256",), "jwks_url": "https://idp.example/jwks"}, "not in 'algorithms'"),
        ({"jwks_url": "http://idp.example/jwks", "algorithms": ("HS256", "RS256")}, "https"),
        ({"jwks_url": "ftp://idp.example/jwks", "algorithms": ("HS256", "RS256")}, "https"),
        ({"jwks_url": "https:///jwks", "algorithms": ("HS256", "RS256")}, "needs a host"),
        ({"jwks_url": "https://idp.example/jwks"}, "public-key algorithm"),
        ({"type_rules": ()}, "at least one token type"),
        ({"cache_size": 0}, "cache size"),
    ],
    ids=[
        "no_algorithms", "alg_none", "alg_NONE", "unknown_alg", "no_keys_at_all", "key_alg_not_pinned",
        "jwks_over_http", "jwks_over_ftp", "jwks_without_host", "jwks_with_only_hmac", "no_type_rules", "cache_size_zero",
    ],
)
def test_settings_are_validated(overrides: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"algorithms": ("HS256",), "static_keys": (HS256_KEY,), "type_rules": RULES, **overrides}
    with pytest.raises(ValueError, match=message):
        JwtSourceSettings(**values)


@pytest.mark.parametrize(
    "url",
    ["https://idp.example/jwks", "http://127.0.0.1:8080/jwks", "http://[::1]/jwks", "http://localhost/jwks"],
    ids=["https", "loopback_v4", "loopback_v6", "localhost"],
)
def test_jwks_urls_that_are_accepted(url: str) -> None:
    built = JwtSourceSettings(algorithms=("RS256",), jwks_url=url, type_rules=RULES)
    assert built.jwks_url == url and built.static_keys == ()


def test_settings_defaults_are_those_the_config_documents() -> None:
    built = JwtSourceSettings(algorithms=("RS256",), static_keys=(RS256_KEY,), type_rules=RULES)
    assert (built.subject_claim, built.cache_size, built.cache_max_seconds) == ("sub", 10000, 300.0)
    assert built.path_prefixes_claim is None and built.client_ips_claim is None and built.expected_typ is None


@pytest.mark.parametrize(
    "algorithm, material, message",
    [
        ("HS256", b"short", "at least 32 bytes"),
        ("HS256", b"s" * 31, "at least 32 bytes"),
        ("HS384", b"s" * 47, "at least 48 bytes"),
        ("HS512", b"s" * 48, "at least 64 bytes"),
        ("HS256", public_pem("rsa"), "not a PEM"),
        ("HS256", b"\n" + public_pem("rsa"), "not a PEM"),
        ("RS256", private_pem("rsa"), "private key"),
        ("ES256", private_pem("p256"), "private key"),
        ("RS256", certificate_pem("rsa"), "not a certificate"),
        ("RS256", public_pem("rsa1024"), "at least 2048 bits"),
        ("RS256", public_pem("p256"), "needs an RSA public key"),
        ("PS256", public_pem("ed25519"), "needs an RSA public key"),
        ("ES384", public_pem("p256"), "needs curve secp384r1"),
        ("ES256", public_pem("p384"), "needs curve secp256r1"),
        ("ES256", public_pem("rsa"), "needs an EC public key"),
        ("EdDSA", public_pem("p256"), "Ed25519"),
        ("ES256", b"garbage", "not a PEM public key"),
        ("XS256", b"x" * 64, "not supported"),
        ("none", b"x" * 64, "not supported"),
    ],
    ids=[
        "hmac_short", "hs256_31_bytes", "hs384_47_bytes", "hs512_48_bytes", "hmac_secret_is_rsa_pem",
        "hmac_secret_is_pem_after_newline", "rsa_private_key", "ec_private_key", "certificate", "rsa_1024",
        "rsa_alg_ec_key", "ps_alg_ed25519_key", "es384_on_p256", "es256_on_p384", "ec_alg_rsa_key",
        "eddsa_alg_ec_key", "garbage", "unknown_alg", "alg_none",
    ],
)
def test_static_keys_are_validated(algorithm: str, material: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_static_key(kid=None, algorithm=algorithm, material=material)


@pytest.mark.parametrize(
    "algorithm, material",
    [("HS256", b"s" * 32), ("HS512", b"s" * 64), ("RS256", public_pem("rsa")), ("ES384", public_pem("p384")), ("EdDSA", public_pem("ed25519"))],
    ids=["hs256", "hs512", "rs256", "es384", "eddsa"],
)
def test_static_keys_that_are_accepted(algorithm: str, material: bytes) -> None:
    key = load_static_key(kid="k", algorithm=algorithm, material=material)
    assert (key.kid, key.algorithm) == ("k", algorithm)


# -- the JOSE header read as strictly as the claims; size refused before any work ------------


def raw_header_token(header_json: str, payload: dict[str, Any] | None = None) -> str:
    """An HS256-signed token whose JOSE header is exactly ``header_json`` (duplicates and all)."""
    signing_input = f"{b64(header_json.encode())}.{b64(json.dumps(payload or claims()).encode())}"
    return f"{signing_input}.{b64(hmac.new(HS_SECRET, signing_input.encode(), hashlib.sha256).digest())}"


async def test_a_header_built_by_hand_verifies_when_its_names_are_unique() -> None:
    assert isinstance(await verify(raw_header_token('{"alg":"HS256","kid":"h1"}')), TokenFacts)


@pytest.mark.parametrize(
    "header_json",
    [
        '{"alg":"HS256","kid":"h1","alg":"HS256"}',  # the same value twice: still two readings to trust
        '{"alg":"none","kid":"h1","alg":"HS256"}',  # PyJWT keeps the last; another parser the first
        '{"alg":"HS256","kid":"h9","kid":"h1"}',
        '{"alg":"HS256","kid":"h1","typ":"JWT","typ":"at+jwt"}',
        '{"alg":"HS256","kid":"h1","x":NaN}',
    ],
    ids=["alg_twice_same", "alg_twice_different", "kid_twice", "typ_twice", "nan_constant"],
)
async def test_duplicate_names_in_the_jose_header_are_malformed(header_json: str) -> None:
    """RFC 7515 section 4: header parameter names must be unique, or the token rejected."""
    result = await verify(raw_header_token(header_json))
    assert reason(result) is Reason.MALFORMED_TOKEN
    assert isinstance(result, TokenRejection) and "header" in result.detail


def big_token(size: int, alg: str = "HS256") -> str:
    """A correctly signed token of at least ``size`` characters (a padding claim)."""
    token = token_for(alg, claims(padding="x" * size))
    assert len(token) > size
    return token


async def test_a_token_over_max_token_bytes_is_refused_before_any_key_lookup() -> None:
    """The keys live behind an unreachable JWKS URL: a small token is refused for want of keys,
    an oversized one as too large, with no fetch attempted."""
    fetches: list[str] = []
    source_settings = settings(("RS256",), static_keys=(), jwks_url="https://127.0.0.1:9/jwks")
    small = await verify(token_for("RS256"), source_settings, on_fetch=fetches.append)
    assert reason(small) is Reason.KEYS_UNAVAILABLE and fetches == ["error"]
    fetches.clear()
    large = await verify(big_token(5000, "RS256"), source_settings, on_fetch=fetches.append)
    assert reason(large) is Reason.TOKEN_TOO_LARGE
    assert fetches == []


async def test_max_token_bytes_is_per_source_and_inclusive() -> None:
    token = big_token(4400)  # about 6 KB
    assert 4096 < len(token) < 8192
    assert reason(await verify(token)) is Reason.TOKEN_TOO_LARGE  # the default, 4096
    assert isinstance(await verify(token, settings(max_token_bytes=8192)), TokenFacts)
    assert isinstance(await verify(token, settings(max_token_bytes=len(token))), TokenFacts)
    assert reason(await verify(token, settings(max_token_bytes=len(token) - 1))) is Reason.TOKEN_TOO_LARGE
    assert JwtSourceSettings(algorithms=("HS256",), static_keys=settings().static_keys, type_rules=RULES).max_token_bytes == 4096


async def test_max_token_bytes_is_read_from_the_config(tmp_path: Path) -> None:
    from proxy.config import load_config
    from tests.conftest import write_config

    source = jwt_config_source(max_token_bytes=8192)
    config = load_config(write_config(tmp_path, "http://127.0.0.1:9", upstream={"token_source": source}))
    assert config.upstreams[0].token_source.max_token_bytes == 8192


@pytest.mark.parametrize("value", [255, 0, "big"])
def test_labgate_check_refuses_a_max_token_bytes_below_256_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: object
) -> None:
    from proxy.cli import main
    from tests.conftest import write_config

    path = write_config(tmp_path, "http://127.0.0.1:9", upstream={"token_source": jwt_config_source(max_token_bytes=value)})
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "max_token_bytes" in text)
    assert main(["check", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:{line}:" in err and "max_token_bytes" in err


def jwt_config_source(**extra: Any) -> dict[str, Any]:
    """The jwt token_source of tests.conftest.write_config, with ``extra`` keys."""
    return {
        "type": "jwt",
        "algorithms": ["HS256"],
        "keys": [{"kid": "k1", "algorithm": "HS256", "secret_file": "hs256.secret"}],
        "types": [{"token_type": "reader", "match": {"role": "reader"}}],
        **extra,
    }
