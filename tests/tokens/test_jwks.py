"""JWKS: fetched once, refetched on unknown kid (rate-limited, single flight), last good keys kept."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import pytest
from aiohttp import web

from proxy.reasons import Reason
from proxy.tokens.facts import TokenFacts, TokenRejection
from proxy.tokens.jwks import JwksCache, KeysUnavailable
from proxy.tokens.jwt_source import JwtSource, JwtSourceSettings
from proxy.tokens.matchers import TypeRule, compile_conditions
from tests.tokens.keys import AUDIENCE, ISSUER, claims, public_jwk, sign


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


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def cache_for(server: KeyServer, clock: Clock, results: list[str] | None = None, **kwargs: Any) -> JwksCache:
    values: dict[str, Any] = {"algorithms": ("RS256", "ES256"), "min_refetch_interval": 30.0, "max_age": 300.0}
    values.update(kwargs)
    return JwksCache(server.url, clock=clock, on_fetch=(results.append if results is not None else None), **values)


async def test_first_use_fetches_and_later_uses_reuse(key_server: KeyServer) -> None:
    results: list[str] = []
    cache = cache_for(key_server, Clock(), results)
    try:
        assert (await cache.get("r1", "RS256")) is not None
        assert (await cache.get("r1", "RS256")) is not None
        assert (await cache.get("r1", "ES256")) is None  # this key is pinned to RS256 by its own alg
    finally:
        await cache.close()
    assert key_server.hits == 1 and results == ["ok"]


async def test_unknown_kid_refetches_once_per_interval(key_server: KeyServer) -> None:
    clock = Clock()
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
    clock = Clock()
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


async def test_keys_are_refreshed_after_max_age(key_server: KeyServer) -> None:
    clock = Clock()
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
    [(500, b"oops"), (200, b"not json"), (200, b'{"keys": "nope"}'), (200, b'{"keys": []}'), (200, b"x" * (1024 * 1024 + 10))],
    ids=["server_error", "not_json", "keys_not_a_list", "no_keys", "too_large"],
)
async def test_failed_fetch_keeps_the_last_good_keys(key_server: KeyServer, status: int, body: bytes) -> None:
    clock = Clock()
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
    cache = cache_for(key_server, Clock())
    try:
        with pytest.raises(KeysUnavailable):
            await cache.get("r1", "RS256")
    finally:
        await cache.close()


async def test_symmetric_encryption_and_unpinned_keys_are_skipped(key_server: KeyServer) -> None:
    key_server.keys = [
        {"kty": "oct", "kid": "s1", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0", "alg": "HS256"},
        public_jwk("rsa", kid="enc", use="enc"),
        public_jwk("rsa", kid="r384", alg="RS384"),
        public_jwk("p256", kid="e1"),  # no alg: usable for the pinned EC algorithm of its curve
        {"kty": "RSA", "kid": "broken", "n": "AQAB"},
    ]
    cache = cache_for(key_server, Clock(), algorithms=("RS256", "ES256", "HS256"))
    try:
        assert (await cache.get("s1", "HS256")) is None
        assert (await cache.get("enc", "RS256")) is None
        assert (await cache.get("r384", "RS256")) is None
        assert (await cache.get("e1", "ES256")) is not None
        assert (await cache.get("broken", "RS256")) is None
    finally:
        await cache.close()


async def test_without_kid_only_a_single_candidate_answers(key_server: KeyServer) -> None:
    cache = cache_for(key_server, Clock())
    try:
        assert (await cache.get(None, "RS256")) is not None
    finally:
        await cache.close()
    key_server.keys.append(public_jwk("rsa", kid="r2", alg="RS256"))
    cache = cache_for(key_server, Clock())
    try:
        assert (await cache.get(None, "RS256")) is None
    finally:
        await cache.close()


def jwks_settings(url: str) -> JwtSourceSettings:
    return JwtSourceSettings(
        algorithms=("RS256",),
        jwks_url=url,
        issuer=ISSUER,
        audience=(AUDIENCE,),
        type_rules=(TypeRule("reader", compile_conditions({"role": "reader"})),),
    )


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
