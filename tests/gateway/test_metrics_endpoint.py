"""/metrics as Prometheus reads it: promtool-clean after mixed traffic, bounded labels, several processes."""

from __future__ import annotations

import copy
import os
import random
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest
import yaml
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from proxy.metrics import mark_worker_dead
from tests.conftest import (
    GatewayStarter,
    RecordingUpstream,
    free_port,
    mint,
    write_config,
)
from tests.labgate_process import labgate_serving
from tests.tokens.keys import private_key, public_jwk


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        message = "promtool is not installed: apt-get install prometheus (bash .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


def assert_promtool_clean(exposition: bytes) -> None:
    """``promtool check metrics``: the text parses and every lint (naming, units, help) passes."""
    result = subprocess.run([promtool(), "check", "metrics"], input=exposition, capture_output=True, timeout=60)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert result.stdout.strip() == b"" and result.stderr.strip() == b"", (result.stdout + result.stderr).decode()


def samples(exposition: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(exposition)
        for s in family.samples
    }


def value(exposition: str, name: str, **labels: str) -> float | None:
    return samples(exposition).get((name, frozenset(labels.items())))


async def fetch(client: aiohttp.ClientSession, url: str, token: str | None = None, **headers: str) -> int:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with client.get(url, headers=headers) as response:
        await response.read()
        return response.status


async def scrape(client: aiohttp.ClientSession, base: str) -> bytes:
    async with client.get(f"{base}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        return await response.read()


@pytest.fixture
async def jwks_url() -> AsyncIterator[str]:
    """An identity provider's key set on loopback: one RSA key, kid r1."""

    async def keys(request: web.Request) -> web.Response:
        return web.json_response({"keys": [public_jwk("rsa", kid="r1", alg="RS256", use="sig")]})

    app = web.Application()
    app.router.add_get("/jwks.json", keys)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/jwks.json"
    await runner.cleanup()


def demo_and_dead_upstreams(tmp_path: Path, upstream_url: str, jwks: str) -> list[dict[str, Any]]:
    """The test config's upstream (now also trusting the JWKS) and a second one nothing listens behind."""
    demo = yaml.safe_load(write_config(tmp_path, upstream_url).read_text())["upstreams"][0]
    demo["token_source"].update(jwks_url=jwks, algorithms=["HS256", "RS256"])
    dead = copy.deepcopy(demo)
    dead.update(name="dead", url=f"http://127.0.0.1:{free_port()}", path_prefix="/dead")
    return [demo, dead]


async def test_metrics_after_mixed_traffic_pass_promtool(
    upstream: RecordingUpstream, start_http1_gateway: GatewayStarter, tmp_path: Path, jwks_url: str
) -> None:
    gateway = await start_http1_gateway(upstream.url, upstreams=demo_and_dead_upstreams(tmp_path, upstream.url, jwks_url))
    base = gateway.url
    rs256 = jwt.encode(
        {**jwt.decode(mint(), options={"verify_signature": False}), "sub": "bob"},
        private_key("rsa"),
        algorithm="RS256",
        headers={"kid": "r1"},
    )
    async with aiohttp.ClientSession() as client:
        statuses = [
            await fetch(client, f"{base}/demo/api/hosts", mint()),
            await fetch(client, f"{base}/demo/api/hosts", rs256),  # its key comes from the JWKS
            await fetch(client, f"{base}/demo/api/hosts?sort=name", mint()),
            await fetch(client, f"{base}/demo/api/admin", mint()),
            await fetch(client, f"{base}/demo/api/hosts"),
            await fetch(client, f"{base}/demo/api/hosts", mint(secret="x" * 48)),
            await fetch(client, f"{base}/elsewhere", mint()),
            await fetch(client, f"{base}/dead/api/hosts", mint()),
        ]
        exposition = await scrape(client, base)
    assert statuses == [200, 200, 403, 403, 401, 401, 404, 502]
    assert_promtool_clean(exposition)

    text = exposition.decode()
    requests = "labgate_requests_total"
    assert value(text, requests, upstream="demo", token_type="reader", decision="allow", reason="allowed") == 2
    for reason in ("query_param_not_allowed", "route_not_allowed"):
        assert value(text, requests, upstream="demo", token_type="reader", decision="deny", reason=reason) == 1
    for reason in ("missing_token", "bad_signature"):
        assert value(text, requests, upstream="demo", token_type="none", decision="deny", reason=reason) == 1
    assert value(text, requests, upstream="none", token_type="none", decision="deny", reason="no_upstream") == 1
    assert value(text, requests, upstream="dead", token_type="reader", decision="deny", reason="upstream_unreachable") == 1
    assert value(text, "labgate_upstream_errors_total", upstream="dead", kind="upstream_unreachable") == 1
    assert value(text, "labgate_jwks_fetches_total", upstream="demo", result="ok") == 1
    assert value(text, "labgate_request_duration_seconds_count", upstream="demo", decision="allow") == 2
    assert value(text, "labgate_upstream_duration_seconds_count", upstream="demo") == 2
    # Tokens with one subject minted in the same second are one token; bob's RS256 token is another.
    assert value(text, "labgate_live_tokens", upstream="demo", token_type="reader") in (2, 3)
    # A request that never reached its appliance is not a use of its token.
    assert value(text, "labgate_live_tokens", upstream="dead", token_type="reader") is None
    assert (value(text, "labgate_store_operation_duration_seconds_count", operation="revocations") or 0) >= 1
    assert value(text, "labgate_store_errors_total", operation="revocations") == 0
    assert value(text, "labgate_config_reloads_total", result="failure") == 0
    assert (value(text, "labgate_config_last_reload_success_timestamp_seconds") or 0) > 0


def series(exposition: bytes) -> set[tuple[str, frozenset[tuple[str, str]]]]:
    return set(samples(exposition.decode()))


async def test_label_values_stay_bounded_whatever_clients_send(
    upstream: RecordingUpstream, start_http1_gateway: GatewayStarter
) -> None:
    """Random paths, tokens, subjects, forwarded addresses and request ids never become label values."""
    gateway = await start_http1_gateway(upstream.url, trusted_proxies=["127.0.0.1"])
    rng = random.Random(7)
    sent: list[str] = []

    async def random_requests(client: aiohttp.ClientSession) -> None:
        for _ in range(12):
            path, subject, request_id = (f"p{uuid.uuid4().hex}", f"s{uuid.uuid4().hex}", f"r{uuid.uuid4().hex}")
            client_ip = f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}"
            valid, garbage = mint({"sub": subject}), f"g{uuid.uuid4().hex}.{uuid.uuid4().hex}.{uuid.uuid4().hex}"
            sent.extend([path, subject, request_id, client_ip, valid.split(".")[2], garbage])
            common = {"X-Forwarded-For": client_ip, "X-Request-ID": request_id}
            await fetch(client, f"{gateway.url}/demo/api/hosts/{path}", valid, **common)  # allowed: {id}
            await fetch(client, f"{gateway.url}/demo/api/{path}?{path}=1", valid, **common)
            await fetch(client, f"{gateway.url}/demo/api/hosts", garbage, **common)
            await fetch(client, f"{gateway.url}/{path}", valid, **common)

    async with aiohttp.ClientSession() as client:
        await random_requests(client)
        first = await scrape(client, gateway.url)
        await random_requests(client)
        second = await scrape(client, gateway.url)
    text = second.decode()
    leaked = [value for value in sent if value in text]
    assert leaked == []
    assert series(second) == series(first)  # twice the random requests, not one series more


async def test_several_processes_share_one_exposition(upstream: RecordingUpstream, tmp_path: Path) -> None:
    """Workers write to PROMETHEUS_MULTIPROC_DIR; /metrics in any of them shows the sum of all."""
    shared = tmp_path / "prometheus"
    shared.mkdir()
    env = {"PROMETHEUS_MULTIPROC_DIR": str(shared)}
    configs = []
    for name in ("one", "two"):
        (tmp_path / name).mkdir()
        configs.append(write_config(tmp_path / name, upstream.url, store={"type": "memory"}))
    first_token, second_token = mint({"sub": "first"}), mint({"sub": "second"})
    async with labgate_serving(configs[0], env=env) as (one, _), aiohttp.ClientSession() as client:
        async with labgate_serving(configs[1], env=env) as (two, second_process):
            assert await fetch(client, f"{one}/demo/api/hosts", first_token) == 200
            assert await fetch(client, f"{one}/demo/api/hosts", first_token) == 200
            assert await fetch(client, f"{two}/demo/api/hosts", second_token) == 200
            assert await fetch(client, f"{two}/demo/api/nothing", second_token) == 403
            from_one, from_two = await scrape(client, one), await scrape(client, two)
        mark_worker_dead(second_process.pid, str(shared))
        after = (await scrape(client, one)).decode()

    assert_promtool_clean(from_one)
    assert samples(from_one.decode()) == samples(from_two.decode())
    text = from_one.decode()
    assert value(text, "labgate_requests_total", upstream="demo", token_type="reader", decision="allow", reason="allowed") == 3
    assert value(text, "labgate_requests_total", upstream="demo", token_type="reader", decision="deny", reason="route_not_allowed") == 1
    assert value(text, "labgate_request_duration_seconds_count", upstream="demo", decision="allow") == 3
    assert value(text, "labgate_live_tokens", upstream="demo", token_type="reader") == 2
    # The second process exited: its requests still count, its tokens are no longer live there.
    assert value(after, "labgate_requests_total", upstream="demo", token_type="reader", decision="allow", reason="allowed") == 3
    assert value(after, "labgate_live_tokens", upstream="demo", token_type="reader") == 1
    assert any(path.name.startswith("counter_") for path in shared.iterdir())
