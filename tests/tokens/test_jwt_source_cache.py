"""The jwt source: narrowing claims, and the cache of verified tokens, bounded by exp."""

from __future__ import annotations

import asyncio
import ipaddress
import math
import time
from typing import Any

import pytest

from proxy.reasons import Reason
from proxy.token_facts import TokenFacts, TokenRejection
from proxy.tokens.jwt_source import JwtSource
from tests.clock import Clock
from tests.tokens.jwt_tokens import now, reason, settings, token_for, verify
from tests.tokens.keys import (
    claims,
    sign,
)

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
