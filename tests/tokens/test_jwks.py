"""JWKS: fetched once, refetched on unknown kid (rate-limited, single flight), last good keys kept."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from proxy.reasons import Reason
from proxy.token_facts import TokenFacts, TokenRejection
from proxy.tokens.jwks import JwksCache
from proxy.tokens.jwt_source import JwtSource, JwtSourceSettings
from proxy.tokens.matchers import TypeRule, compile_conditions
from proxy.verification_keys import KeysUnavailable, load_static_key
from tests.clock import Clock
from tests.tokens.keys import (
    AUDIENCE,
    HS_SECRET,
    ISSUER,
    assert_no_token_in,
    claims,
    public_jwk,
    public_pem,
    sign,
)


@dataclass
class KeyServer:
    """A JWKS endpoint on loopback whose answer the test controls and whose hits it counts."""

    keys: list[dict[str, Any]] = field(default_factory=list)
    status: int = 200
    body: bytes | None = None
    delay: float = 0.0
    hits: int = 0
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.body is not None:
            return web.Response(body=self.body, status=self.status)
        return web.json_response({"keys": self.keys}, status=self.status)


@pytest.fixture
async def key_server() -> AsyncIterator[KeyServer]:
    server = KeyServer(keys=[public_jwk("rsa", kid="r1", alg="RS256", use="sig")])
    app = web.Application()
    app.router.add_get("/jwks.json", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    server.url = f"http://127.0.0.1:{port}/jwks.json"
    yield server
    await runner.cleanup()


def jwt_hs256(body: dict[str, Any], secret: bytes, *, kid: str) -> str:
    """HS256 by hand: PyJWT itself refuses a PEM as an HMAC secret."""
    signing_input = f"{b64url(json.dumps({'alg': 'HS256', 'kid': kid}).encode())}.{b64url(json.dumps(body).encode())}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64url(signature)}"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def cache_for(server: KeyServer, clock: Clock, results: list[str] | None = None, **kwargs: Any) -> JwksCache:
    values: dict[str, Any] = {"algorithms": ("RS256", "ES256"), "min_refetch_interval": 30.0, "max_age": 300.0}
    values.update(kwargs)
    return JwksCache(server.url, clock=clock, on_fetch=(results.append if results is not None else None), **values)


async def test_first_use_fetches_and_later_uses_reuse(key_server: KeyServer) -> None:
    results: list[str] = []
    cache = cache_for(key_server, Clock(1000.0), results)
    try:
        assert (await cache.get("r1", "RS256")) is not None
        assert (await cache.get("r1", "RS256")) is not None
        assert (await cache.get("r1", "ES256")) is None  # this key is pinned to RS256 by its own alg
    finally:
        await cache.close()
    assert key_server.hits == 1 and results == ["ok"]


async def test_unknown_kid_refetches_once_per_interval(key_server: KeyServer) -> None:
    clock = Clock(1000.0)
    cache = cache_for(key_server, clock)
    try:
        await cache.get("r1", "RS256")
        key_server.keys.append(public_jwk("p256", kid="e1", alg="ES256"))
        clock.now += 31
        assert (await cache.get("e1", "ES256")) is not None  # rotation seen through the refetch
        assert key_server.hits == 2
        assert (await cache.get("nope", "RS256")) is None  # within 30 s of the last fetch: no refetch
        assert (await cache.get("nope2", "RS256")) is None
        assert key_server.hits == 2
        clock.now += 31
        assert (await cache.get("nope", "RS256")) is None
        assert key_server.hits == 3
    finally:
        await cache.close()


async def test_concurrent_unknown_kids_cause_one_fetch(key_server: KeyServer) -> None:
    clock = Clock(1000.0)
    key_server.delay = 0.05
    cache = cache_for(key_server, clock)
    try:
        await cache.get("r1", "RS256")
        clock.now += 31
        found = await asyncio.gather(*(cache.get("unknown", "RS256") for _ in range(20)))
    finally:
        await cache.close()
    assert found == [None] * 20
    assert key_server.hits == 2


async def test_concurrent_first_uses_cause_one_fetch(key_server: KeyServer) -> None:
    key_server.delay = 0.05
    results: list[str] = []
    cache = cache_for(key_server, Clock(1000.0), results)
    try:
        found = await asyncio.gather(*(cache.get("r1", "RS256") for _ in range(20)))
    finally:
        await cache.close()
    assert all(key is not None and key.kid == "r1" for key in found)
    assert key_server.hits == 1 and results == ["ok"]


async def test_a_caller_that_goes_away_does_not_cancel_the_shared_fetch(key_server: KeyServer) -> None:
    key_server.delay = 0.05
    cache = cache_for(key_server, Clock(1000.0))
    try:
        first = asyncio.create_task(cache.get("r1", "RS256"))
        await asyncio.sleep(0.01)  # the fetch is under way
        others = asyncio.gather(*(cache.get("r1", "RS256") for _ in range(5)))
        first.cancel()
        found = await others
        with pytest.raises(asyncio.CancelledError):
            await first
    finally:
        await cache.close()
    assert all(key is not None for key in found)
    assert key_server.hits == 1


async def test_keys_are_refreshed_after_max_age(key_server: KeyServer) -> None:
    clock = Clock(1000.0)
    cache = cache_for(key_server, clock)
    try:
        await cache.get("r1", "RS256")
        key_server.keys = [public_jwk("p256", kid="e1", alg="ES256")]
        clock.now += 301
        assert (await cache.get("r1", "RS256")) is None  # the old key is gone from the new set
        assert (await cache.get("e1", "ES256")) is not None
    finally:
        await cache.close()
    assert key_server.hits == 2


@pytest.mark.parametrize(
    "status, body",
    [
        (500, b"oops"),
        (302, b""),
        (200, b"not json"),
        (200, b"[" * 100000),
        (200, b'{"keys": "nope"}'),
        (200, b'["keys"]'),
        (200, b'{"keys": []}'),
        (200, b"x" * (1024 * 1024 + 10)),
    ],
    ids=["server_error", "redirect", "not_json", "deeply_nested", "keys_not_a_list", "not_an_object", "no_keys", "too_large"],
)
async def test_failed_fetch_keeps_the_last_good_keys(key_server: KeyServer, status: int, body: bytes) -> None:
    clock = Clock(1000.0)
    results: list[str] = []
    cache = cache_for(key_server, clock, results)
    try:
        assert (await cache.get("r1", "RS256")) is not None
        key_server.status, key_server.body = status, body
        clock.now += 301
        assert (await cache.get("r1", "RS256")) is not None
    finally:
        await cache.close()
    assert results == ["ok", "error"]


async def test_never_fetched_keys_are_unavailable(key_server: KeyServer) -> None:
    key_server.status, key_server.body = 503, b"down"
    results: list[str] = []
    cache = cache_for(key_server, Clock(1000.0), results)
    try:
        with pytest.raises(KeysUnavailable):
            await cache.get("r1", "RS256")
    finally:
        await cache.close()
    assert results == ["error"]


async def test_an_outage_from_the_start_is_fetched_once_per_interval(key_server: KeyServer) -> None:
    """Twenty waiting requests take the one failed fetch's answer instead of queueing twenty more."""
    clock = Clock(1000.0)
    key_server.status, key_server.body, key_server.delay = 500, b"down", 0.05
    cache = cache_for(key_server, clock)
    try:
        outcomes = await asyncio.gather(*(cache.get("r1", "RS256") for _ in range(20)), return_exceptions=True)
        assert all(isinstance(outcome, KeysUnavailable) for outcome in outcomes)
        assert key_server.hits == 1
        clock.now += 10
        with pytest.raises(KeysUnavailable):
            await cache.get("r1", "RS256")
        assert key_server.hits == 1  # within the refetch interval
        key_server.status, key_server.body = 200, None
        clock.now += 21
        assert (await cache.get("r1", "RS256")) is not None
        assert key_server.hits == 2
    finally:
        await cache.close()


SKIPPED_KEYS = [
    ({"kty": "oct", "kid": "x", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "alg": "HS256"}, "HS256"),
    ({"kty": "oct", "kid": "x", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"}, "HS256"),
    (public_jwk("rsa", kid="x", use="enc"), "RS256"),
    (public_jwk("rsa", kid="x", alg="RS384"), "RS256"),
    (public_jwk("rsa", kid="x", alg="RS384"), "RS384"),
    (public_jwk("rsa", kid="x", alg="ES256"), "ES256"),
    (public_jwk("rsa1024", kid="x", alg="RS256"), "RS256"),
    (public_jwk("p256", kid="x", alg="ES384"), "ES384"),
    (public_jwk("p384", kid="x"), "ES256"),
    ({"kty": "RSA", "kid": "x", "n": "AQAB"}, "RS256"),
    ({"kty": "RSA", "kid": "x", "n": 5, "e": "AQAB"}, "RS256"),
    ({**public_jwk("rsa", alg="RS256"), "kid": 7}, "RS256"),
    ({"kty": "EC", "kid": "x", "crv": "P-256", "x": "AA", "y": "AA"}, "ES256"),
]


@pytest.mark.parametrize(
    "jwk, algorithm",
    SKIPPED_KEYS,
    ids=[
        "oct_with_alg", "oct_without_alg", "use_enc", "alg_not_pinned", "alg_not_pinned_asked_anyway",
        "alg_of_other_family", "rsa_1024", "ec_alg_on_wrong_curve", "ec_no_alg_wrong_curve", "rsa_missing_e",
        "rsa_n_not_a_string", "kid_not_a_string", "ec_point_not_on_curve",
    ],
)
async def test_unusable_published_keys_are_skipped_not_fatal(key_server: KeyServer, jwk: dict[str, Any], algorithm: str) -> None:
    """One bad key must not take the whole set down; the good key next to it still works."""
    key_server.keys = [jwk, public_jwk("rsa", kid="good", alg="RS256")]
    cache = cache_for(key_server, Clock(1000.0), algorithms=("RS256", "ES256", "HS256"))
    try:
        assert (await cache.get(str(jwk.get("kid")), algorithm)) is None
        assert (await cache.get("good", "RS256")) is not None
    finally:
        await cache.close()


@pytest.mark.parametrize(
    "jwk, algorithm",
    [
        (public_jwk("p256", kid="x"), "ES256"),
        (public_jwk("rsa", kid="x"), "PS256"),
        (public_jwk("rsa", kid="x", use="sig", alg="PS256"), "PS256"),
        (public_jwk("ed25519", kid="x", alg="EdDSA"), "EdDSA"),
    ],
    ids=["ec_no_alg_by_curve", "rsa_no_alg_any_pinned_rsa_alg", "rsa_alg_and_use", "okp_eddsa"],
)
async def test_usable_published_keys(key_server: KeyServer, jwk: dict[str, Any], algorithm: str) -> None:
    key_server.keys = [jwk]
    cache = cache_for(key_server, Clock(1000.0), algorithms=("RS256", "PS256", "ES256", "EdDSA"))
    try:
        found = await cache.get("x", algorithm)
    finally:
        await cache.close()
    assert found is not None and (found.kid, found.algorithm) == ("x", algorithm)


async def test_a_set_with_only_unusable_keys_is_a_failed_fetch(key_server: KeyServer) -> None:
    key_server.keys = [jwk for jwk, _ in SKIPPED_KEYS]
    results: list[str] = []
    cache = cache_for(key_server, Clock(1000.0), results, algorithms=("RS256", "ES256", "HS256"))
    try:
        with pytest.raises(KeysUnavailable):
            await cache.get("x", "RS256")
    finally:
        await cache.close()
    assert results == ["error"]


async def test_without_kid_only_a_single_candidate_answers(key_server: KeyServer) -> None:
    cache = cache_for(key_server, Clock(1000.0))
    try:
        assert (await cache.get(None, "RS256")) is not None
    finally:
        await cache.close()
    key_server.keys.append(public_jwk("rsa", kid="r2", alg="RS256"))
    cache = cache_for(key_server, Clock(1000.0))
    try:
        assert (await cache.get(None, "RS256")) is None
    finally:
        await cache.close()


def jwks_settings(url: str, **overrides: Any) -> JwtSourceSettings:
    values: dict[str, Any] = dict(
        algorithms=("RS256",),
        jwks_url=url,
        issuer=ISSUER,
        audience=(AUDIENCE,),
        type_rules=(TypeRule("reader", compile_conditions({"role": "reader"})),),
    )
    values.update(overrides)
    return JwtSourceSettings(**values)


async def test_jwt_source_verifies_with_a_key_set(key_server: KeyServer) -> None:
    fetches: list[str] = []
    source = JwtSource(jwks_settings(key_server.url), on_fetch=fetches.append)
    try:
        facts = await source.verify(sign(claims(), "RS256", "rsa", kid="r1"))
        forged = await source.verify(sign(claims(), "RS256", "rsa", kid="r9"))
    finally:
        await source.close()
    assert isinstance(facts, TokenFacts) and facts.token_type == "reader"
    assert isinstance(forged, TokenRejection) and forged.reason is Reason.UNKNOWN_KEY
    assert fetches == ["ok"]


async def test_jwt_source_is_unavailable_when_the_key_set_never_loaded(key_server: KeyServer) -> None:
    key_server.status, key_server.body = 500, b""
    source = JwtSource(jwks_settings(key_server.url))
    try:
        result = await source.verify(sign(claims(), "RS256", "rsa", kid="r1"))
    finally:
        await source.close()
    assert isinstance(result, TokenRejection) and result.reason is Reason.KEYS_UNAVAILABLE
    assert result.reason.status == 503


async def test_jwt_source_is_unavailable_when_the_key_server_is_down(unused_tcp_port: int) -> None:
    fetches: list[str] = []
    source = JwtSource(jwks_settings(f"http://127.0.0.1:{unused_tcp_port}/jwks.json"), on_fetch=fetches.append)
    token = sign(claims(), "RS256", "rsa", kid="r1")
    try:
        result = await source.verify(token)
    finally:
        await source.close()
    assert isinstance(result, TokenRejection) and result.reason is Reason.KEYS_UNAVAILABLE
    assert_no_token_in(result.detail, token)
    assert fetches == ["error"]


async def test_jwt_source_picks_up_a_rotated_key(key_server: KeyServer) -> None:
    source = JwtSource(jwks_settings(key_server.url, jwks_min_refetch_interval=0.0))
    try:
        assert isinstance(await source.verify(sign(claims(), "RS256", "rsa", kid="r1")), TokenFacts)
        key_server.keys = [public_jwk("attacker_rsa", kid="r2", alg="RS256")]  # a new key, published by the issuer
        rotated = await source.verify(sign(claims(), "RS256", "attacker_rsa", kid="r2"))
    finally:
        await source.close()
    assert isinstance(rotated, TokenFacts)
    assert key_server.hits == 2


async def test_a_published_rsa_key_never_becomes_an_hmac_secret(key_server: KeyServer) -> None:
    """RFC 8725 section 2.1: HS256 signed with the key set's own RSA key, HS256 pinned with a static secret."""
    both = jwks_settings(
        key_server.url,
        algorithms=("RS256", "HS256"),
        static_keys=(load_static_key(kid="h1", algorithm="HS256", material=HS_SECRET),),
    )
    pem = public_pem("rsa")
    source = JwtSource(both)
    try:
        as_rsa_kid = await source.verify(jwt_hs256(claims(role="reader"), pem, kid="r1"))
        as_hmac_kid = await source.verify(jwt_hs256(claims(role="reader"), pem, kid="h1"))
    finally:
        await source.close()
    assert isinstance(as_rsa_kid, TokenRejection) and as_rsa_kid.reason is Reason.UNKNOWN_KEY
    assert isinstance(as_hmac_kid, TokenRejection) and as_hmac_kid.reason is Reason.BAD_SIGNATURE

