"""The jwt source: pinned algorithms and keys, claims checked, the token's shape and JOSE header."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

import pytest

from proxy.reasons import Reason
from proxy.token_facts import TokenFacts, TokenRejection
from proxy.verification_keys import load_static_key
from tests.tokens.jwt_tokens import KEYS, b64, hand_made, now, reason, settings, token_for, verify
from tests.tokens.keys import (
    AUDIENCE,
    HS_SECRET,
    ISSUER,
    claims,
    public_jwk,
    public_pem,
    sign,
)

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
