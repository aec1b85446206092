"""The issuer source: labgate's own tokens verified with its key ring, everything else refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest

from proxy.issuer.access_tokens import mint_access_token
from proxy.issuer.keys import load_private_key, new_signing_key, public_jwk
from proxy.issuer.ring import KeyRing, SigningKey, rotate_signing_key
from proxy.reasons import Reason
from proxy.store.memory import MemoryStore
from proxy.token_facts import TokenFacts, TokenRejection
from proxy.tokens.issuer_source import IssuerSource, IssuerSourceSettings
from tests.clock import Clock
from tests.issuer.issuing import ISSUER_URL, grant, issuer_settings
from tests.tokens.keys import assert_no_token_in

SETTINGS = issuer_settings(access_token_max_lifetime=600.0, key_refresh_interval=5.0, leeway=5.0)


class Issuer:
    """A key ring on a store, the source verifying against it, and ways to make good and bad tokens."""

    def __init__(self, clock: Clock | None = None) -> None:
        self.clock = clock or Clock()
        self.store = MemoryStore()
        self.ring = KeyRing(self.store, SETTINGS, clock=self.clock)
        self.source = IssuerSource(IssuerSourceSettings(SETTINGS, ("demo",), ("reader", "admin")), self.ring)

    async def key(self) -> SigningKey:
        return await self.ring.signing_key()

    async def mint(self, **overrides: Any) -> str:
        """Token times are real ones: PyJWT checks exp and iat against the real clock; the ring reads ``clock``."""
        return mint_access_token(await self.key(), SETTINGS, grant(**overrides), now=time.time()).token

    async def forge(self, claims: dict[str, Any], *, drop: tuple[str, ...] = (), **headers: Any) -> str:
        """Signed with the ring's real key, but with claims or headers labgate would never write."""
        key = await self.key()
        now = int(time.time())
        body: dict[str, Any] = {
            "iss": ISSUER_URL, "sub": "alice", "aud": "demo", "iat": now, "exp": now + 300, "jti": "j1",
            "client_id": "ops-cli", "token_type": "reader",
        }
        body.update(claims)
        for name in drop:
            body.pop(name)
        header = {"kid": key.kid, "typ": "at+jwt", **headers}
        return jwt.encode(body, key.private_key, algorithm="ES256", headers={k: v for k, v in header.items() if v is not None})

    async def verify(self, token: str) -> TokenFacts | TokenRejection:
        result = await self.source.verify(token)
        if isinstance(result, TokenRejection):
            assert_no_token_in(result.detail, token)
        return result


def reason(result: TokenFacts | TokenRejection) -> Reason | None:
    return result.reason if isinstance(result, TokenRejection) else None


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_a_token_labgate_minted_verifies_with_its_type_subject_client_and_narrowing() -> None:
    issuer = Issuer()
    token = await issuer.mint(token_type="admin", path_prefixes=("/api/hosts",), client_ips=("10.9.0.0/16",))
    facts = await issuer.verify(token)
    assert isinstance(facts, TokenFacts)
    assert (facts.token_type, facts.subject, facts.claims["client_id"]) == ("admin", "alice", "ops-cli")
    assert facts.path_prefixes == ("/api/hosts",)
    assert facts.client_ips is not None and len(facts.client_ips) == 1
    assert facts.expires_at is not None and facts.issued_at is not None and facts.expires_at - facts.issued_at == 300


@pytest.mark.parametrize(
    "claims, drop, headers, expected",
    [
        ({"iss": "https://elsewhere.test"}, (), {}, Reason.WRONG_ISSUER),
        ({"iss": ISSUER_URL + "/"}, (), {}, Reason.WRONG_ISSUER),
        ({"aud": "other-upstream"}, (), {}, Reason.WRONG_AUDIENCE),
        ({}, ("aud",), {}, Reason.MISSING_CLAIM),
        ({}, ("exp",), {}, Reason.MISSING_CLAIM),
        ({}, ("iat",), {}, Reason.MISSING_CLAIM),
        ({}, ("sub",), {}, Reason.MISSING_CLAIM),
        ({}, ("jti",), {}, Reason.MISSING_CLAIM),
        ({}, (), {"typ": None}, Reason.MALFORMED_TOKEN),
        ({}, (), {"typ": "JWT"}, Reason.MALFORMED_TOKEN),
        ({"token_type": "office"}, (), {}, Reason.NO_TOKEN_TYPE),
        ({}, ("token_type",), {}, Reason.NO_TOKEN_TYPE),
        ({"exp": int(time.time()) + 3600}, (), {}, Reason.MALFORMED_TOKEN),
        ({"path_prefixes": ["/api/%2e%2e/admin"]}, (), {}, Reason.MALFORMED_TOKEN),
        ({"client_ips": "everyone"}, (), {}, Reason.MALFORMED_TOKEN),
        ({}, (), {"crit": ["exp"]}, Reason.MALFORMED_TOKEN),
    ],
    ids=[
        "another_issuer", "issuer_spelled_with_a_slash", "another_audience", "no_audience", "no_exp", "no_iat",
        "no_sub", "no_jti", "typ_missing", "typ_jwt", "type_this_upstream_does_not_accept", "no_token_type",
        "lives_longer_than_the_issuer_signs", "bad_prefix_claim", "bad_ip_claim", "crit_header",
    ],
)
async def test_tokens_signed_with_the_right_key_but_not_as_labgate_writes_them_are_refused(
    claims: dict[str, Any], drop: tuple[str, ...], headers: dict[str, Any], expected: Reason
) -> None:
    issuer = Issuer()
    assert reason(await issuer.verify(await issuer.forge(claims, drop=drop, **headers))) is expected


async def test_an_expired_token_is_refused() -> None:
    issuer = Issuer()
    token = mint_access_token(await issuer.key(), SETTINGS, grant(lifetime=60), now=time.time() - 600)
    assert reason(await issuer.verify(token.token)) is Reason.TOKEN_EXPIRED


async def test_a_token_from_a_key_outside_the_ring_is_unknown() -> None:
    issuer = Issuer()
    await issuer.key()
    outsider = new_signing_key("ES256", now=time.time(), passphrase=None)
    forged_key = SigningKey(outsider.kid, "ES256", load_private_key(outsider, None))
    token = mint_access_token(forged_key, SETTINGS, grant(), now=time.time()).token
    assert reason(await issuer.verify(token)) is Reason.UNKNOWN_KEY
    # Naming a ring key's kid does not help: the signature is checked with the ring's key.
    relabelled = jwt.encode(jwt.decode(token, options={"verify_signature": False}), forged_key.private_key,
                            algorithm="ES256", headers={"kid": (await issuer.key()).kid, "typ": "at+jwt"})
    assert reason(await issuer.verify(relabelled)) is Reason.BAD_SIGNATURE


async def test_keys_offered_by_the_token_itself_are_never_used() -> None:
    """RFC 8725 section 3.10: jwk/jku/x5u headers do not choose who vouches for a token."""
    issuer = Issuer()
    await issuer.key()
    attacker = new_signing_key("ES256", now=time.time(), passphrase=None)
    body = jwt.decode(await issuer.mint(), options={"verify_signature": False})
    for extra in ({"jwk": public_jwk(attacker)}, {"jku": "https://attacker.test/jwks.json"}):
        token = jwt.encode(body, load_private_key(attacker, None), algorithm="ES256",
                           headers={"kid": attacker.kid, "typ": "at+jwt", **extra})
        assert reason(await issuer.verify(token)) is Reason.UNKNOWN_KEY


async def test_a_token_without_a_kid_is_unknown() -> None:
    issuer = Issuer()
    key = await issuer.key()
    body = jwt.decode(await issuer.mint(), options={"verify_signature": False})
    token = jwt.encode(body, key.private_key, algorithm="ES256", headers={"typ": "at+jwt"})
    assert reason(await issuer.verify(token)) is Reason.UNKNOWN_KEY


@pytest.mark.parametrize("algorithm", ["HS256", "none", "ES384", "PS256", "EdDSA"])
async def test_algorithms_labgate_does_not_sign_with_are_refused(algorithm: str) -> None:
    issuer = Issuer()
    key = await issuer.key()
    body = jwt.decode(await issuer.mint(), options={"verify_signature": False})
    header = b64(json.dumps({"alg": algorithm, "kid": key.kid, "typ": "at+jwt"}).encode())
    signing_input = f"{header}.{b64(json.dumps(body).encode())}"
    token = f"{signing_input}.{b64(b'x' * 64)}"
    assert reason(await issuer.verify(token)) is Reason.ALGORITHM_NOT_ALLOWED


async def test_hs256_signed_with_the_published_public_key_is_refused() -> None:
    """Algorithm confusion (RFC 8725 section 2.1): the JWKS's public key used as an HMAC secret."""
    issuer = Issuer()
    key = await issuer.key()
    published = (await issuer.ring.published())[0]
    body = jwt.decode(await issuer.mint(), options={"verify_signature": False})
    header = b64(json.dumps({"alg": "HS256", "kid": key.kid, "typ": "at+jwt"}).encode())
    signing_input = f"{header}.{b64(json.dumps(body).encode())}"
    for secret in (published.public_pem.encode(), json.dumps(public_jwk(published)).encode()):
        signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        assert reason(await issuer.verify(f"{signing_input}.{b64(signature)}")) is Reason.ALGORITHM_NOT_ALLOWED


async def test_an_rs256_token_naming_an_es256_keys_kid_finds_no_key() -> None:
    issuer = Issuer()
    key = await issuer.key()
    rsa = new_signing_key("RS256", now=time.time(), passphrase=None)
    body = jwt.decode(await issuer.mint(), options={"verify_signature": False})
    token = jwt.encode(body, load_private_key(rsa, None), algorithm="RS256", headers={"kid": key.kid, "typ": "at+jwt"})
    assert reason(await issuer.verify(token)) is Reason.UNKNOWN_KEY


async def test_after_rotation_old_tokens_verify_until_the_old_key_ends_then_are_refused() -> None:
    clock = Clock()
    issuer = Issuer(clock)
    old_token = await issuer.mint(lifetime=600)
    clock.advance(1)
    await rotate_signing_key(issuer.store, SETTINGS, now=clock())  # `labgate keys rotate`
    clock.advance(SETTINGS.key_refresh_interval)
    new_token = await issuer.mint()
    assert jwt.get_unverified_header(new_token)["kid"] != jwt.get_unverified_header(old_token)["kid"]
    assert isinstance(await issuer.verify(old_token), TokenFacts)
    assert isinstance(await issuer.verify(new_token), TokenFacts)
    clock.advance(SETTINGS.retired_key_grace - SETTINGS.key_refresh_interval)  # the old key's grace is over
    assert reason(await issuer.verify(old_token)) is Reason.UNKNOWN_KEY
    assert isinstance(await issuer.verify(new_token), TokenFacts)


async def test_a_dropped_key_stops_verifying_within_two_refresh_intervals_even_when_cached() -> None:
    clock = Clock()
    issuer = Issuer(clock)
    token = await issuer.mint()
    assert isinstance(await issuer.verify(token), TokenFacts)  # now cached
    await rotate_signing_key(issuer.store, SETTINGS, now=clock(), drop_old=True)
    clock.advance(2 * SETTINGS.key_refresh_interval)
    assert reason(await issuer.verify(token)) is Reason.UNKNOWN_KEY


async def test_an_unreadable_ring_is_503_keys_unavailable() -> None:
    from proxy.store.redis import RedisStore
    from tests.conftest import free_port

    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    try:
        source = IssuerSource(IssuerSourceSettings(SETTINGS, ("demo",), ("reader",)), KeyRing(store, SETTINGS))
        token = await Issuer().mint()
        result = await source.verify(token)
        assert reason(result) is Reason.KEYS_UNAVAILABLE and Reason.KEYS_UNAVAILABLE.status == 503
    finally:
        await store.close()
