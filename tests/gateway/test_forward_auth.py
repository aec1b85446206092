"""Forward-auth: labgate answers what it would decide, and forwards nothing itself.

Real HTTP against an in-process labgate, asked the way nginx ``auth_request``
(``X-Original-*``) and Traefik ``ForwardAuth`` (``X-Forwarded-Method/-Uri/-Host``) ask.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from proxy.config import load_config
from proxy.gateway.app import Gateway
from proxy.gateway.server import make_runner
from tests.conftest import (
    TEST_PACK,
    GatewayStarter,
    RecordingUpstream,
    RunningGateway,
    gateway_starter,
    mint,
    write_config,
)

ENDPOINT = "/forward-auth"
ERROR_KEYS = {"error", "error_description", "reason", "request_id"}


@pytest.fixture
async def start(tmp_path: Path) -> AsyncIterator[GatewayStarter]:
    """Nothing is forwarded by forward-auth, so one upstream transport is enough."""
    async with gateway_starter(tmp_path, "http1") as starter:
        yield starter


async def forward_auth_gateway(start: GatewayStarter, recorder: RecordingUpstream, **overrides: Any) -> RunningGateway:
    settings: dict[str, Any] = {"endpoints": {"forward_auth": ENDPOINT}, "trusted_proxies": ["127.0.0.1"]}
    settings.update(overrides)
    return await start(recorder.url, **settings)


class Answer:
    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def reason(self) -> str | None:
        return self.headers.get("X-Labgate-Reason")


def nginx_asks(method: str, uri: str, token: str | None = None, **extra: str) -> list[tuple[str, str]]:
    """The headers of an nginx ``auth_request`` subrequest as the shipped example sets them."""
    headers = [("X-Original-Method", method), ("X-Original-URI", uri)]
    if token is not None:
        headers.append(("Authorization", f"Bearer {token}"))
    return headers + list(extra.items())


async def ask(
    gateway: RunningGateway, headers: list[tuple[str, str]], *, method: str = "GET", path: str = ENDPOINT
) -> Answer:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, URL(gateway.url + path, encoded=True), headers=headers) as response:
            return Answer(response.status, dict(response.headers), await response.read())


def assert_no_token(answer: Answer, token: str) -> None:
    assert token not in answer.body.decode()
    assert all(token not in value for value in answer.headers.values())


async def test_allowed_request_answers_200_and_nothing_is_forwarded(
    upstream: RecordingUpstream, start: GatewayStarter
) -> None:
    gateway = await forward_auth_gateway(start, upstream)
    token = mint()
    answer = await ask(gateway, nginx_asks("GET", "/demo/api/hosts?limit=1", token))
    assert answer.status == 200
    assert answer.reason == "allowed"
    assert answer.headers["X-Labgate-Token-Type"] == "reader"
    assert answer.headers["X-Labgate-Rule"] == "demo/reader/routes/GET /api/hosts"
    assert answer.headers["X-Labgate-Upstream"] == "demo"
    assert answer.headers["Cache-Control"] == "no-store"
    body = answer.json()
    assert body["allowed"] is True and body["reason"] == "allowed" and body["token_type"] == "reader"
    assert body["request_id"] == answer.headers["X-Request-ID"]
    assert_no_token(answer, token)
    assert upstream.received == []


async def test_nginx_keeps_the_clients_method_for_the_subrequest(upstream: RecordingUpstream, start: GatewayStarter) -> None:
    """auth_request asks with the client's method; the endpoint answers any method and decides X-Original-Method."""
    gateway = await forward_auth_gateway(start, upstream)
    allowed = await ask(gateway, nginx_asks("POST", "/demo/api/backups/b1/restore", mint()), method="POST")
    assert (allowed.status, allowed.reason) == (200, "allowed")
    not_this_method = await ask(gateway, nginx_asks("DELETE", "/demo/api/hosts", mint()), method="DELETE")
    assert (not_this_method.status, not_this_method.reason) == (403, "method_not_allowed")
    assert upstream.received == []


@pytest.mark.parametrize(
    "method, uri, claims, status, reason",
    [
        ("GET", "/demo/api/admin", {}, 403, "route_not_allowed"),
        ("GET", "/demo/api/hosts?sort=name", {}, 403, "query_param_not_allowed"),
        ("GET", "/demo/api/hosts?SORT=name", {}, 403, "query_param_not_allowed"),
        ("POST", "/demo/api/hosts", {}, 403, "method_not_allowed"),
        ("GET", "/demo/api/hosts", {"role": "nobody"}, 401, "no_token_type"),
        ("GET", "/demo/api/hosts", {"exp": 1}, 401, "token_expired"),
        ("GET", "/elsewhere/api/hosts", {}, 404, "no_upstream"),
        ("TRACE", "/demo/api/hosts", {}, 405, "method_not_supported"),
        ("get", "/demo/api/hosts", {}, 405, "method_not_supported"),
    ],
    ids=["route", "query", "query_case", "method", "no_type", "expired", "no_upstream", "trace", "lowercase_method"],
)
async def test_denials_carry_the_gateways_status_reason_and_body(
    upstream: RecordingUpstream, start: GatewayStarter, method: str, uri: str, claims: dict[str, Any], status: int, reason: str
) -> None:
    gateway = await forward_auth_gateway(start, upstream)
    token = mint(claims)
    answer = await ask(gateway, nginx_asks(method, uri, token))
    assert (answer.status, answer.reason) == (status, reason)
    assert set(answer.json()) == ERROR_KEYS
    if status in (401, 403):  # RFC 6750 section 3: the token did not allow the request
        assert answer.headers["WWW-Authenticate"].startswith(f'Bearer realm="labgate", error="{answer.json()["error"]}"')
    else:
        assert "WWW-Authenticate" not in answer.headers
    assert answer.json()["reason"] == reason
    assert_no_token(answer, token)
    assert upstream.received == []


async def test_bad_token_answers_401_with_www_authenticate(upstream: RecordingUpstream, start: GatewayStarter) -> None:
    gateway = await forward_auth_gateway(start, upstream)
    token = mint(secret="x" * 48)
    answer = await ask(gateway, nginx_asks("GET", "/demo/api/hosts", token))
    assert (answer.status, answer.reason) == (401, "bad_signature")
    assert answer.headers["WWW-Authenticate"].startswith('Bearer realm="labgate", error="invalid_token"')
    assert_no_token(answer, token)
    assert upstream.received == []


async def test_missing_token_answers_401_with_the_bare_challenge(upstream: RecordingUpstream, start: GatewayStarter) -> None:
    """RFC 6750 section 3.1: no credentials at all get no error code in the challenge."""
    gateway = await forward_auth_gateway(start, upstream)
    answer = await ask(gateway, nginx_asks("GET", "/demo/api/hosts"))
    assert (answer.status, answer.reason) == (401, "missing_token")
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="labgate"'
    assert "X-Labgate-Token-Type" not in answer.headers
    assert upstream.received == []


async def test_token_in_the_original_query_is_refused(upstream: RecordingUpstream, start: GatewayStarter) -> None:
    gateway = await forward_auth_gateway(start, upstream)
    token = mint()
    answer = await ask(gateway, nginx_asks("GET", f"/demo/api/hosts?access_token={token}", token))
    assert (answer.status, answer.reason) == (401, "malformed_authorization")
    assert_no_token(answer, token)


@pytest.mark.parametrize(
    "uri, reason",
    [
        ("/demo/api/hosts/%2e%2e/admin", "ambiguous_path"),
        ("/demo/api/../api/hosts", "ambiguous_path"),
        ("/demo/api/./hosts", "ambiguous_path"),
        ("/demo/api/%2Fhosts", "ambiguous_path"),
        ("/demo/api/%252Fhosts", "ambiguous_path"),
        ("/demo/api//hosts", "ambiguous_path"),
        ("/demo/api;x=1/hosts", "ambiguous_path"),
        ("/demo/api/hosts%3fsort=x", "ambiguous_path"),
        ("/demo/api/hosts?a;b=1", "bad_query"),
        ("http://127.0.0.1/demo/api/hosts", "bad_request"),
        ("demo/api/hosts", "bad_request"),
        ("/demo/api/hosts#x", "bad_request"),
    ],
    ids=lambda v: v,
)
async def test_original_uri_must_pass_the_path_contract(
    upstream: RecordingUpstream, start: GatewayStarter, uri: str, reason: str
) -> None:
    gateway = await forward_auth_gateway(start, upstream)
    answer = await ask(gateway, nginx_asks("GET", uri, mint()))
    assert (answer.status, answer.reason) == (400, reason)
    assert set(answer.json()) == ERROR_KEYS
    assert upstream.received == []


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("X-Original-URI", "/demo/api/hosts")],
        [("X-Original-Method", "GET")],
        [("X-Original-Method", "GET"), ("X-Original-URI", "")],
        [("X-Original-Method", "GET"), ("X-Original-URI", "/demo/api/hosts"), ("X-Original-URI", "/demo/api/admin")],
        [("X-Original-Method", "GET"), ("X-Original-Method", "DELETE"), ("X-Original-URI", "/demo/api/hosts")],
        [("X-Forwarded-Method", "GET"), ("X-Original-URI", "/demo/api/hosts")],
        [("X-Original-Method", "GET"), ("X-Original-URI", "/demo/api/hosts"), ("X-Forwarded-Uri", "/demo/api/hosts")],
        [("X-Forwarded-Method", "GET"), ("X-Forwarded-Uri", "/demo/api/hosts"), ("X-Forwarded-Host", "a"), ("X-Forwarded-Host", "b")],
        [("X-Forwarded-Method", "GET"), ("X-Forwarded-Uri", "/demo/api/hosts"), ("X-Forwarded-Host", "a, b")],
    ],
    ids=[
        "none", "no_method", "no_uri", "empty_uri", "two_uris", "two_methods", "mixed_families", "both_families",
        "two_hosts", "host_list",
    ],
)
async def test_missing_or_inconsistent_headers_answer_400(
    upstream: RecordingUpstream, start: GatewayStarter, headers: list[tuple[str, str]]
) -> None:
    gateway = await forward_auth_gateway(start, upstream)
    token = mint()
    answer = await ask(gateway, headers + [("Authorization", f"Bearer {token}")])
    assert (answer.status, answer.reason) == (400, "forward_auth_headers")
    assert answer.json()["error"] == "invalid_request"
    assert_no_token(answer, token)
    assert upstream.received == []


@pytest.mark.parametrize("override", ["X-HTTP-Method-Override", "X-HTTP-Method", "x-method-override"])
async def test_method_override_headers_are_refused(upstream: RecordingUpstream, start: GatewayStarter, override: str) -> None:
    """The proxy would pass them on: an allowed GET must not become a DELETE at the appliance."""
    gateway = await forward_auth_gateway(start, upstream)
    answer = await ask(gateway, nginx_asks("GET", "/demo/api/hosts", mint(), **{override: "DELETE"}))
    assert (answer.status, answer.reason) == (400, "method_override")
    assert upstream.received == []


async def test_traefik_headers_name_method_target_and_host(upstream: RecordingUpstream, start: GatewayStarter) -> None:
    gateway = await forward_auth_gateway(start, upstream, upstream={"path_prefix": None, "host": "svt.lab.example"})
    token = mint()

    def traefik(method: str, uri: str, host: str) -> list[tuple[str, str]]:
        return [
            ("X-Forwarded-Method", method), ("X-Forwarded-Proto", "https"), ("X-Forwarded-Host", host),
            ("X-Forwarded-Uri", uri), ("X-Forwarded-For", "10.1.2.3"), ("Authorization", f"Bearer {token}"),
        ]

    allowed = await ask(gateway, traefik("GET", "/api/hosts?offset=5", "svt.lab.example:443"))
    assert (allowed.status, allowed.reason, allowed.headers["X-Labgate-Upstream"]) == (200, "allowed", "demo")
    denied = await ask(gateway, traefik("GET", "/api/hosts?sort=name", "svt.lab.example"))
    assert (denied.status, denied.reason) == (403, "query_param_not_allowed")
    other_host = await ask(gateway, traefik("GET", "/api/hosts", "other.lab.example"))
    assert (other_host.status, other_host.reason) == (404, "no_upstream")
    assert upstream.received == []


async def test_host_comes_from_the_request_when_no_x_forwarded_host(upstream: RecordingUpstream, start: GatewayStarter) -> None:
    gateway = await forward_auth_gateway(start, upstream, upstream={"path_prefix": None, "host": "svt.lab.example"})
    answer = await ask(gateway, nginx_asks("GET", "/api/hosts", mint(), Host="svt.lab.example"))
    assert (answer.status, answer.reason) == (200, "allowed")


async def test_untrusted_peer_gets_403_even_for_an_allowed_request(upstream: RecordingUpstream, start: GatewayStarter) -> None:
    """Only a listed proxy may say what another client's request was."""
    gateway = await forward_auth_gateway(start, upstream, trusted_proxies=["10.20.0.10"])
    token = mint()
    answer = await ask(gateway, nginx_asks("GET", "/demo/api/hosts", token))
    assert (answer.status, answer.reason) == (403, "forward_auth_untrusted")
    assert answer.json()["error"] == "access_denied"
    assert "X-Labgate-Token-Type" not in answer.headers
    assert_no_token(answer, token)
    assert upstream.received == []


@pytest.mark.parametrize(
    "forwarded_for, status, reason",
    [
        ("10.9.1.1", 200, "allowed"),
        ("10.8.1.1", 403, "client_ip_not_allowed"),
        ("10.9.1.1, 10.8.1.1", 403, "client_ip_not_allowed"),  # the rightmost untrusted hop is the client
        ("010.9.1.1", 403, "client_ip_unknown"),
    ],
)
async def test_client_ip_comes_from_the_trusted_proxys_forwarding_header(
    upstream: RecordingUpstream, start: GatewayStarter, forwarded_for: str, status: int, reason: str
) -> None:
    gateway = await forward_auth_gateway(start, upstream)
    headers = nginx_asks("GET", "/demo/api/hosts", mint({"role": "office"}), **{"X-Forwarded-For": forwarded_for})
    answer = await ask(gateway, headers)
    assert (answer.status, answer.reason) == (status, reason)


async def test_forward_auth_is_off_unless_configured(upstream: RecordingUpstream, start: GatewayStarter) -> None:
    gateway = await start(upstream.url, trusted_proxies=["127.0.0.1"])
    answer = await ask(gateway, nginx_asks("GET", "/demo/api/hosts", mint()))
    assert answer.status == 404
    assert answer.json()["reason"] == "no_upstream"


async def test_the_endpoint_is_exact(upstream: RecordingUpstream, start: GatewayStarter) -> None:
    """Below the endpoint is not the endpoint: an ordinary request, routed like any other."""
    gateway = await forward_auth_gateway(start, upstream)
    answer = await ask(gateway, nginx_asks("GET", "/demo/api/hosts", mint()), path=ENDPOINT + "/x")
    assert (answer.status, answer.json()["reason"]) == (404, "no_upstream")


async def test_counted_and_logged_like_a_request_marked_forward_auth(
    upstream: RecordingUpstream, start: GatewayStarter, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await forward_auth_gateway(start, upstream)
    token = mint()
    caplog.set_level(logging.INFO, logger="labgate.decisions")
    await ask(gateway, nginx_asks("POST", "/demo/api/backups/b1/restore", token), method="GET")
    await ask(gateway, nginx_asks("GET", "/demo/api/hosts?sort=secretvalue", token))
    await ask(gateway, nginx_asks("GET", "/demo/api/hosts", token), path="/demo/api/hosts")  # an ordinary request
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "labgate.decisions"]
    assert [(line["decision"], line["reason"], line.get("forward_auth")) for line in lines] == [
        ("allow", "allowed", True),
        ("deny", "query_param_not_allowed", True),
        ("allow", "allowed", None),
    ]
    allowed = lines[0]
    assert (allowed["method"], allowed["path"], allowed["upstream"], allowed["status"]) == ("POST", "/api/backups/b1/restore", "demo", 200)
    assert allowed["upstream_status"] is None
    assert token not in caplog.text and "secretvalue" not in caplog.text
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gateway.url}/metrics") as response:
            metrics = await response.text()
    assert 'labgate_requests_total{decision="allow",reason="allowed",token_type="reader",upstream="demo"} 2.0' in metrics
    assert 'labgate_requests_total{decision="deny",reason="query_param_not_allowed",token_type="reader",upstream="demo"} 1.0' in metrics


async def test_refusals_before_the_request_is_known_count_without_upstream(
    upstream: RecordingUpstream, start: GatewayStarter
) -> None:
    gateway = await forward_auth_gateway(start, upstream)
    await ask(gateway, [("X-Original-Method", "GET")])
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gateway.url}/metrics") as response:
            metrics = await response.text()
    assert 'labgate_requests_total{decision="deny",reason="forward_auth_headers",token_type="none",upstream="none"} 1.0' in metrics


async def test_shadow_mode_allows_and_says_what_would_have_denied(tmp_path: Path, upstream: RecordingUpstream) -> None:
    """A type rolling out in shadow mode: the proxy forwards, the answer and the metrics say why it would not."""
    path = write_config(tmp_path, upstream.url, endpoints={"forward_auth": ENDPOINT}, trusted_proxies=["127.0.0.1"])
    (tmp_path / "policies" / "demo.yaml").write_text(TEST_PACK.replace("  reader:\n", "  reader:\n    shadow: true\n"))
    config = load_config(path)
    runner = make_runner(Gateway(config), config)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", config.listen.port).start()
        gateway = RunningGateway(config, f"http://127.0.0.1:{config.listen.port}", config.listen.port)
        answer = await ask(gateway, nginx_asks("GET", "/demo/api/nothing", mint()))
        enforced = await ask(gateway, nginx_asks("GET", "/demo/other", mint({"role": "admin"})))
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{gateway.url}/metrics") as response:
                metrics = await response.text()
    finally:
        await runner.cleanup()
    assert (answer.status, answer.reason, answer.headers["X-Labgate-Shadow"]) == (200, "route_not_allowed", "true")
    assert answer.json()["allowed"] is True
    assert (enforced.status, enforced.reason, "X-Labgate-Shadow" in enforced.headers) == (403, "prefix_not_allowed", False)
    assert 'labgate_shadow_denials_total{reason="route_not_allowed",token_type="reader",upstream="demo"} 1.0' in metrics
    assert upstream.received == []
