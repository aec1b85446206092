"""Shadow mode end to end: what a shadow type would have denied is forwarded, logged and counted."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from proxy.cli import main
from proxy.gateway.reload import ReloadingGateway
from tests.conftest import TEST_PACK, RecordingUpstream, mint, raw_request, write_config
from tests.gateway.serving import get, metrics_text, serving

# reader and office roll out in shadow mode; admin stays enforced.
SHADOW_PACK = TEST_PACK.replace("  reader:\n", "  reader:\n    shadow: true\n").replace(
    "  office:\n", "  office:\n    shadow: true\n"
)


@pytest.fixture(params=["http1", "aiohttp"])
def transport(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@asynccontextmanager
async def shadow_gateway(
    tmp_path: Path, upstream: RecordingUpstream, transport: str, **overrides: Any
) -> AsyncIterator[tuple[ReloadingGateway, str]]:
    config = write_config(tmp_path, upstream.url, upstream={"transport": transport}, **overrides)
    (tmp_path / "policies" / "demo.yaml").write_text(SHADOW_PACK)
    async with serving(config) as running:
        yield running


def sample(text: str, name: str, **labels: str) -> float:
    """One sample's value from the exposition (0 when the series is absent)."""
    for family in text_string_to_metric_families(text):
        for found in family.samples:
            if found.name == name and found.labels == labels:
                return float(found.value)
    return 0.0


def decision_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "labgate.decisions"]


@pytest.mark.parametrize(
    "role, target, reason, rule",
    [
        ("reader", "/api/nothing", "route_not_allowed", "demo/reader/routes"),
        ("reader", "/api/hosts?sort=name", "query_param_not_allowed", "demo/reader/query"),
        ("reader", "/api/upload", "method_not_allowed", "demo/reader/routes"),
        ("office", "/api/hosts", "client_ip_not_allowed", "demo/office/client_ips"),  # 127.0.0.1 is outside 10.9/16
    ],
    ids=["route", "query", "method", "client_ip"],
)
async def test_a_shadow_denial_is_forwarded_logged_and_counted(
    upstream: RecordingUpstream, tmp_path: Path, transport: str, caplog: pytest.LogCaptureFixture,
    role: str, target: str, reason: str, rule: str,
) -> None:
    caplog.set_level(logging.INFO, logger="labgate.decisions")
    token = mint({"role": role})
    async with shadow_gateway(tmp_path, upstream, transport) as (_, url):
        status, body = await get(f"{url}/demo{target}", token)
        metrics = await metrics_text(url)
    assert (status, body["path"]) == (200, target)
    assert [r.raw_path for r in upstream.received] == [target]
    labels = {"upstream": "demo", "token_type": role, "reason": reason}
    assert sample(metrics, "labgate_shadow_denials_total", **labels) == 1
    assert sample(metrics, "labgate_requests_total", decision="allow", **labels) == 1
    assert sample(metrics, "labgate_requests_total", decision="deny", **labels) == 0
    [line] = decision_lines(caplog)
    assert (line["decision"], line["shadow"], line["reason"], line["rule"]) == ("allow", True, reason, rule)
    assert (line["status"], line["upstream_status"], line["token_type"]) == (200, 200, role)
    assert token not in caplog.text


async def test_an_allowed_request_of_a_shadow_type_is_no_shadow_denial(
    upstream: RecordingUpstream, tmp_path: Path, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="labgate.decisions")
    async with shadow_gateway(tmp_path, upstream, transport) as (_, url):
        assert (await get(f"{url}/demo/api/hosts?limit=5", mint()))[0] == 200
        metrics = await metrics_text(url)
    assert sample(metrics, "labgate_requests_total", upstream="demo", token_type="reader", decision="allow", reason="allowed") == 1
    assert "labgate_shadow_denials_total{" not in metrics
    [line] = decision_lines(caplog)
    assert "shadow" not in line and line["reason"] == "allowed"


@pytest.mark.parametrize(
    "token, reason",
    [
        (mint({"role": "reader"}, secret="x" * 48), "bad_signature"),
        (mint({"role": "reader", "exp": 1000}), "token_expired"),
        (mint({"role": "reader"}, kid="other"), "unknown_key"),
        (None, "missing_token"),
    ],
    ids=["bad_signature", "expired", "unknown_key", "missing"],
)
async def test_a_shadow_type_never_lets_a_bad_token_through(
    upstream: RecordingUpstream, tmp_path: Path, transport: str, token: str | None, reason: str
) -> None:
    async with shadow_gateway(tmp_path, upstream, transport) as (_, url):
        status, body = await get(f"{url}/demo/api/nothing?sort=name", token)
        metrics = await metrics_text(url)
    assert (status, body["reason"]) == (401, reason)
    assert upstream.received == []
    assert "labgate_shadow_denials_total{" not in metrics


async def test_a_shadow_type_never_lets_a_revoked_token_through(
    upstream: RecordingUpstream, tmp_path: Path, transport: str
) -> None:
    token = mint({"role": "reader", "sub": "mallory"})
    async with shadow_gateway(tmp_path, upstream, transport) as (gateway, url):
        revoke = ["revoke", "--config", str(gateway.config.file), "--subject", "mallory"]
        assert await asyncio.to_thread(main, revoke) == 0
        status, body = await get(f"{url}/demo/api/nothing", token)
    assert (status, body["reason"]) == (401, "revoked")
    assert upstream.received == []


async def test_the_path_contract_still_refuses_for_a_shadow_type(
    upstream: RecordingUpstream, tmp_path: Path, transport: str
) -> None:
    async with shadow_gateway(tmp_path, upstream, transport) as (gateway, url):
        port = gateway.config.listen.port
        answer = await raw_request(
            port, f"GET /demo/api/%2e%2e/hosts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {mint()}\r\n\r\n"
        )
    assert (answer.status, answer.json()["reason"]) == (400, "ambiguous_path")
    assert upstream.received == []


async def test_a_type_without_shadow_is_still_enforced(upstream: RecordingUpstream, tmp_path: Path, transport: str) -> None:
    async with shadow_gateway(tmp_path, upstream, transport) as (_, url):
        status, body = await get(f"{url}/demo/other", mint({"role": "admin"}))
        metrics = await metrics_text(url)
    assert (status, body["reason"]) == (403, "prefix_not_allowed")
    assert upstream.received == []
    assert "labgate_shadow_denials_total{" not in metrics


async def test_decision_log_denials_includes_shadow_denials(
    upstream: RecordingUpstream, tmp_path: Path, transport: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="labgate.decisions")
    async with shadow_gateway(tmp_path, upstream, transport, decision_log="denials") as (_, url):
        for target in ("/demo/api/hosts", "/demo/api/nothing"):
            assert (await get(f"{url}{target}", mint()))[0] == 200
    assert [(line["reason"], line.get("shadow")) for line in decision_lines(caplog)] == [("route_not_allowed", True)]
