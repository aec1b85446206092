"""Rate limits through real sockets: 429 before the appliance, budgets shared through the store."""

from __future__ import annotations

import asyncio
import contextlib
import re
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.conftest import (
    GatewayStarter,
    RecordingUpstream,
    free_port,
    mint,
    write_config,
)
from tests.labgate_process import labgate_serving
from tests.redis_server import RedisServer

RATE_PACK = """
pack: demo
public:
  - GET /api/version
token_types:
  reader:
    routes: [GET /api/hosts]
    query: {allow: [limit]}
    rate_limit: 3/min
  admin:
    routes: [GET /api/hosts]
    rate_limit: {requests: 2, per: 1h, by: subject}
  office:
    routes: [GET /api/hosts]
  session:
    routes: [GET /api/hosts]
    rate_limit: {requests: 1, per: 1h, by: client_id}
"""


def state(header: str) -> list[tuple[str, int, int]]:
    """A ``RateLimit`` field as (policy, r, t) items."""
    return [(name, int(r), int(t)) for name, r, t in re.findall(r'"([^"]+)";r=(\d+);t=(\d+)', header)]


def about(seconds: int, expected: int) -> bool:
    """Whole seconds counted from a moment slightly later than the test's: the wall clock moved on between requests."""
    return expected - 5 < seconds <= expected


async def call(url: str, token: str | None = None, path: str = "/demo/api/hosts") -> tuple[int, dict[str, str], dict[str, object]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session:
        async with session.get(url + path, headers=headers) as response:
            body = await response.json(content_type=None) if response.status >= 400 else {}
            return response.status, dict(response.headers), body


async def test_a_token_past_its_rate_limit_gets_429_and_nothing_is_forwarded(
    upstream: RecordingUpstream, start_gateway: GatewayStarter
) -> None:
    gateway = await start_gateway(upstream.url, pack_text=RATE_PACK)
    token = mint({"role": "reader"})
    answers = [await call(gateway.url, token) for _ in range(4)]
    assert [status for status, _, _ in answers] == [200, 200, 200, 429]
    states = [state(h["RateLimit"])[0] for _, h, _ in answers[:3]]
    assert [(name, r) for name, r, _ in states] == [("type:reader", 2), ("type:reader", 1), ("type:reader", 0)]
    assert [about(t, expected) for (_, _, t), expected in zip(states, (20, 40, 60))] == [True] * 3
    assert answers[0][1]["RateLimit-Policy"] == '"type:reader";q=3;w=60'
    status, headers, body = answers[3]
    assert body["reason"] == "rate_limited" and set(body) == {"error", "error_description", "reason", "request_id"}
    assert token not in str(body)
    assert about(int(headers["Retry-After"]), 20)
    [(name, remaining, reset)] = state(headers["RateLimit"])
    assert (name, remaining) == ("type:reader", 0) and about(reset, 60)
    assert headers["RateLimit-Policy"] == '"type:reader";q=3;w=60'
    assert len(upstream.received) == 3  # the limited request never reached the appliance
    other = mint({"role": "reader", "sub": "bob"})
    assert (await call(gateway.url, other))[0] == 200  # per token (the default): another token has its own budget


async def test_a_denied_request_spends_no_budget(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url, pack_text=RATE_PACK)
    token = mint({"role": "reader"})
    for _ in range(5):
        status, headers, body = await call(gateway.url, token, "/demo/api/hosts?sort=name")
        assert (status, body["reason"]) == (403, "query_param_not_allowed")
        assert "RateLimit" not in headers
    assert [(await call(gateway.url, token))[0] for _ in range(3)] == [200, 200, 200]


async def test_a_limit_by_subject_is_shared_by_the_subjects_tokens(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url, pack_text=RATE_PACK)
    first, second = mint({"role": "admin", "sub": "carol", "jti": "1"}), mint({"role": "admin", "sub": "carol", "jti": "2"})
    assert [(await call(gateway.url, t))[0] for t in (first, second, first)] == [200, 200, 429]
    assert (await call(gateway.url, mint({"role": "admin", "sub": "dave"})))[0] == 200


async def test_a_limit_by_client_id_is_shared_by_the_clients_tokens(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url, pack_text=RATE_PACK)
    first = mint({"role": "session", "sub": "erin", "client_id": "backup-script"})
    second = mint({"role": "session", "sub": "frank", "azp": "backup-script"})  # azp names the client too
    other = mint({"role": "session", "sub": "erin", "client_id": "inventory"})
    assert [(await call(gateway.url, t))[0] for t in (first, second, other)] == [200, 429, 200]
    # Tokens that name no client share one budget: many of them buy no more requests.
    nameless = [mint({"role": "session", "sub": name}) for name in ("g", "h")]
    assert [(await call(gateway.url, t))[0] for t in nameless] == [200, 429]


async def test_a_type_without_a_rate_limit_gets_no_headers(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url, pack_text=RATE_PACK)
    status, headers, _ = await call(gateway.url, mint({"role": "office"}))
    assert status == 200 and "RateLimit" not in headers and "RateLimit-Policy" not in headers


async def test_an_upstream_limit_protects_the_appliance_from_all_clients_together(
    upstream: RecordingUpstream, start_gateway: GatewayStarter
) -> None:
    gateway = await start_gateway(upstream.url, pack_text=RATE_PACK, upstream={"rate_limit": {"requests": 3, "per": "1h"}})
    tokens = [mint({"role": "office", "sub": name}) for name in ("a", "b")]
    statuses = [(await call(gateway.url, tokens[i % 2]))[0] for i in range(3)]
    statuses.append((await call(gateway.url, None, "/demo/api/version"))[0])  # public routes spend it too
    assert statuses == [200, 200, 200, 429]
    status, headers, _ = await call(gateway.url, tokens[0])
    assert status == 429 and about(int(headers["Retry-After"]), 1200)
    assert headers["RateLimit-Policy"] == '"upstream:demo";q=3;w=3600'
    assert len(upstream.received) == 3


async def test_a_request_spends_its_type_and_upstream_budgets_or_neither(
    upstream: RecordingUpstream, start_gateway: GatewayStarter
) -> None:
    gateway = await start_gateway(upstream.url, pack_text=RATE_PACK, upstream={"rate_limit": "5/h"})
    reader = mint({"role": "reader"})
    answers = [await call(gateway.url, reader) for _ in range(4)]
    assert [a[0] for a in answers] == [200, 200, 200, 429]
    assert answers[0][1]["RateLimit-Policy"] == '"type:reader";q=3;w=60, "upstream:demo";q=5;w=3600'
    (type_name, type_r, type_t), (up_name, up_r, up_t) = state(answers[3][1]["RateLimit"])
    assert (type_name, type_r, up_name, up_r) == ("type:reader", 0, "upstream:demo", 2)
    assert about(type_t, 60) and about(up_t, 2160)
    # The type's refusal spent none of the upstream's budget: two more for everyone else.
    assert [(await call(gateway.url, mint({"role": "office"})))[0] for _ in range(3)] == [200, 200, 429]


async def test_rate_limited_requests_are_counted(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url, pack_text=RATE_PACK)
    token = mint({"role": "reader"})
    for _ in range(5):
        await call(gateway.url, token)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gateway.url}/metrics") as response:
            text = await response.text()
    assert 'labgate_rate_limited_total{token_type="reader",upstream="demo"} 2.0' in text
    assert re.search(r'labgate_requests_total\{decision="deny",reason="rate_limited",token_type="reader",upstream="demo"\} 2\.0', text)


@pytest.mark.parametrize("reserve", [None, 4])
@pytest.mark.parametrize("store_failure, expected", [("closed", (503, "store_unavailable")), ("open", (200, None))])
async def test_an_unreachable_store_fails_as_the_limit_says(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, store_failure: str, expected: tuple[int, str | None],
    reserve: int | None,
) -> None:
    limit: dict[str, object] = {"requests": 5, "per": "1m", "store_failure": store_failure}
    if reserve is not None:  # reserving units needs the store as much as checking each request does
        limit["reserve"] = reserve
    gateway = await start_gateway(
        upstream.url, pack_text=RATE_PACK, upstream={"rate_limit": limit},
        store={"type": "redis", "url": f"redis://127.0.0.1:{free_port()}/0"},
    )
    # A public route: no token, so the rate limit is the request's only use of the store.
    status, headers, body = await call(gateway.url, None, "/demo/api/version")
    assert (status, body.get("reason")) == expected
    assert len(upstream.received) == (1 if store_failure == "open" else 0)
    assert "RateLimit" not in headers


@contextlib.asynccontextmanager
async def replicas_sharing(
    upstream: RecordingUpstream, redis_server: RedisServer, tmp_path: Path, upstream_limit: dict[str, object]
) -> AsyncIterator[list[str]]:
    """Two labgate processes sharing one real Redis, the upstream limited by ``upstream_limit``."""
    config = write_config(
        tmp_path, upstream.url, pack_text=RATE_PACK,
        store={"type": "redis", "url": redis_server.url, "prefix": f"rl-{uuid.uuid4().hex}:"},
    )
    async with contextlib.AsyncExitStack() as stack:
        urls = []
        for index in range(2):
            document = yaml.safe_load(config.read_text())
            document["listen"]["port"] = free_port()
            document["upstreams"][0]["rate_limit"] = upstream_limit
            replica_config = tmp_path / f"replica{index}.yaml"
            replica_config.write_text(yaml.safe_dump(document))
            url, _ = await stack.enter_async_context(labgate_serving(replica_config))
            urls.append(url)
        yield urls


@pytest.fixture
async def two_replicas(upstream: RecordingUpstream, redis_server: RedisServer, tmp_path: Path) -> AsyncIterator[list[str]]:
    async with replicas_sharing(upstream, redis_server, tmp_path, {"requests": 4, "per": "1h"}) as urls:
        yield urls


async def test_two_replicas_share_the_budgets_through_redis(two_replicas: list[str], upstream: RecordingUpstream) -> None:
    first, second = two_replicas
    token = mint({"role": "reader"})
    assert [(await call(url, token))[0] for url in (first, second, first, second)] == [200, 200, 200, 429]
    office = mint({"role": "office"})
    # The upstream-wide budget (4 an hour) has 1 left after the reader's 3, whichever replica asks.
    results = await asyncio.gather(call(first, office), call(second, office), call(first, office))
    assert sorted(status for status, _, _ in results) == [200, 429, 429]
    assert len(upstream.received) == 4


async def test_two_reserving_replicas_never_admit_more_than_the_limit_together(
    upstream: RecordingUpstream, redis_server: RedisServer, tmp_path: Path
) -> None:
    """Each replica spends units reserved 3 at a time; 6 an hour for both, however the requests are spread.

    How many of the 6 are admitted depends on how long each replica's units wait (at most 1 s, then
    dropped): on a loaded machine fewer, never more.
    """
    async with replicas_sharing(upstream, redis_server, tmp_path, {"requests": 6, "per": "1h", "reserve": 3}) as urls:
        office = mint({"role": "office"})
        one_by_one = [await call(urls[n % 2], office) for n in range(8)]
        at_once = await asyncio.gather(*(call(urls[n % 2], office) for n in range(12)))
    statuses = [status for status, _, _ in one_by_one + list(at_once)]
    assert set(statuses) == {200, 429} and statuses[-12:].count(200) == 0  # the budget was spent one by one
    admitted = statuses.count(200)
    assert 0 < admitted <= 6 and len(upstream.received) == admitted  # the refused never reached the appliance
    refused = next(headers for status, headers, _ in one_by_one if status == 429)
    assert refused["RateLimit-Policy"] == '"upstream:demo";q=6;w=3600' and about(int(refused["Retry-After"]), 600)
