"""The decision log and request ids: one JSON line per request, at the configured level, never a secret."""

from __future__ import annotations

import base64
import calendar
import json
import logging
import re
import time
from typing import Any

import aiohttp
import pytest

from proxy.token_facts import short_token_hash
from tests.conftest import GatewayStarter, RecordingUpstream, mint, raw_request

FIELDS = {
    "time", "request_id", "upstream", "method", "path", "rule", "client_ip", "peer", "token_type", "token_hash",
    "subject", "decision", "reason", "status", "upstream_status", "duration_ms",
}
GENERATED_ID = re.compile(r"[0-9a-f]{32}")


def decision_lines(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(r.getMessage()) for r in caplog.records if r.name == "labgate.decisions"]


async def send(url: str, token: str | None = None, **headers: str) -> tuple[int, dict[str, str], bytes]:
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as client:
        async with client.get(url, headers=headers) as response:
            return response.status, dict(response.headers), await response.read()


# decision_log: denials is tested in test_listener.py.
@pytest.mark.parametrize("level, expected", [("off", []), ("all", ["allowed", "route_not_allowed"])])
async def test_each_level_logs_what_it_names(
    level: str, expected: list[str], upstream: RecordingUpstream, start_http1_gateway: GatewayStarter,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gateway = await start_http1_gateway(upstream.url, decision_log=level)
    caplog.set_level(logging.INFO, logger="labgate.decisions")
    assert (await send(f"{gateway.url}/demo/api/hosts", mint()))[0] == 200
    assert (await send(f"{gateway.url}/demo/api/nothing", mint()))[0] == 403
    assert [line["reason"] for line in decision_lines(caplog)] == expected


async def test_a_line_carries_every_field_of_the_request(
    upstream: RecordingUpstream, start_http1_gateway: GatewayStarter, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await start_http1_gateway(upstream.url, trusted_proxies=["127.0.0.1"])
    caplog.set_level(logging.INFO, logger="labgate.decisions")
    token = mint({"sub": "ops-7"})
    before = time.time()
    await send(f"{gateway.url}/demo/api/hosts?limit=5", token, **{"X-Forwarded-For": "10.1.2.3", "X-Request-ID": "job-42"})
    await send(f"{gateway.url}/demo/api/hosts?sort=name", token, **{"X-Request-ID": "job-43"})

    allowed, denied = decision_lines(caplog)
    assert set(allowed) == FIELDS and set(denied) == FIELDS
    assert allowed == {
        **allowed,
        "request_id": "job-42", "upstream": "demo", "method": "GET", "path": "/api/hosts",
        "rule": "demo/reader/routes/GET /api/hosts", "client_ip": "10.1.2.3", "peer": "127.0.0.1",
        "token_type": "reader", "token_hash": short_token_hash(token), "subject": "ops-7",
        "decision": "allow", "reason": "allowed", "status": 200, "upstream_status": 200,
    }
    assert denied == {
        **denied,
        "request_id": "job-43", "client_ip": "127.0.0.1", "rule": "demo/reader/query", "decision": "deny",
        "reason": "query_param_not_allowed", "status": 403, "upstream_status": None,
    }
    for line in (allowed, denied):
        assert isinstance(line["duration_ms"], float) and 0 <= line["duration_ms"] < 60_000
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["time"])  # UTC, milliseconds
        stamp = calendar.timegm(time.strptime(line["time"][:19], "%Y-%m-%dT%H:%M:%S"))
        assert before - 1 <= stamp <= time.time() + 1


async def test_a_request_refused_before_any_upstream_is_logged_too(
    upstream: RecordingUpstream, start_http1_gateway: GatewayStarter, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await start_http1_gateway(upstream.url)
    caplog.set_level(logging.INFO, logger="labgate.decisions")
    await send(f"{gateway.url}/nowhere/at/all", mint())
    (line,) = decision_lines(caplog)
    assert set(line) == FIELDS
    assert (line["upstream"], line["reason"], line["status"], line["token_type"], line["subject"]) == (
        None, "no_upstream", 404, None, None,
    )


@pytest.mark.parametrize("request_id", ["job-42", "a" * 128, "2024-06-01T10:00:00.123Z", "A.b_c:d-E"])
async def test_a_sane_request_id_is_honoured_forwarded_and_returned(
    request_id: str, upstream: RecordingUpstream, start_gateway: GatewayStarter, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await start_gateway(upstream.url)
    caplog.set_level(logging.INFO, logger="labgate.decisions")
    status, headers, _ = await send(f"{gateway.url}/demo/api/hosts", mint(), **{"X-Request-ID": request_id})
    assert status == 200
    assert headers["X-Request-ID"] == request_id
    assert upstream.received[0].headers["x-request-id"] == [request_id]
    status, headers, body = await send(f"{gateway.url}/demo/api/hosts?sort=1", mint(), **{"X-Request-ID": request_id})
    assert (status, headers["X-Request-ID"], json.loads(body)["request_id"]) == (403, request_id, request_id)
    assert [line["request_id"] for line in decision_lines(caplog)] == [request_id, request_id]


@pytest.mark.parametrize(
    "request_id_headers",
    [
        "X-Request-ID: " + "a" * 129 + "\r\n",  # too long
        "X-Request-ID: job 42\r\n",  # a space
        "X-Request-ID: job/42\r\n",
        "X-Request-ID: <script>\r\n",
        'X-Request-ID: "job-42"\r\n',
        "X-Request-ID: job-42,job-43\r\n",  # a list
        "X-Request-ID: \xe9t\xe9\r\n",  # not ASCII
        "X-Request-ID: \r\n",  # empty
        "X-Request-ID: job-42\r\nX-Request-ID: job-43\r\n",  # two headers: which one would the appliance log?
        "X-Request-ID: job-42\r\nx-request-id: job-42\r\n",
    ],
    ids=["too-long", "space", "slash", "markup", "quoted", "list", "non-ascii", "empty", "two-headers", "repeated"],
)
async def test_an_insane_request_id_is_replaced_by_a_generated_one(
    request_id_headers: str, upstream: RecordingUpstream, start_gateway: GatewayStarter, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await start_gateway(upstream.url)
    caplog.set_level(logging.INFO, logger="labgate.decisions")
    head = (
        f"GET /demo/api/hosts HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {mint()}\r\n"
        f"{request_id_headers}Connection: close\r\n\r\n"
    )
    response = await raw_request(gateway.port, head)
    assert response.status == 200
    generated = response.headers["x-request-id"]
    assert GENERATED_ID.fullmatch(generated)
    assert upstream.received[0].headers["x-request-id"] == [generated]  # exactly one, ours
    assert [line["request_id"] for line in decision_lines(caplog)] == [generated]


async def test_no_decision_line_carries_a_token_or_password(
    upstream: RecordingUpstream, start_http1_gateway: GatewayStarter, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await start_http1_gateway(upstream.url)
    caplog.set_level(logging.DEBUG)
    valid, expired, forged = mint(), mint(lifetime=-3600), mint(secret="f" * 48)
    password = "hunter2-Pa55word"
    basic = base64.b64encode(f"admin:{password}".encode()).decode()
    base = gateway.url
    await send(f"{base}/demo/api/hosts", valid)
    await send(f"{base}/demo/api/nothing", valid)
    await send(f"{base}/demo/api/hosts", expired)
    await send(f"{base}/demo/api/hosts", forged)
    await send(f"{base}/demo/api/hosts?access_token={valid}&password={password}")
    await send(f"{base}/demo/api/hosts", Authorization=f"Basic {basic}")
    await send(f"{base}/demo/api/hosts", Authorization=f"Bearer {valid}, Bearer {forged}")
    await send(f"{base}/demo/api/hosts", Authorization=f"Token {password}")
    await raw_request(
        gateway.port,
        f"GET /demo/api/hosts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {valid}\r\n"
        f"Authorization: Bearer {forged}\r\nConnection: close\r\n\r\n",
    )

    lines = decision_lines(caplog)
    assert [line["reason"] for line in lines] == [
        "allowed", "route_not_allowed", "token_expired", "bad_signature", "missing_token",
        "missing_token", "malformed_authorization", "missing_token", "malformed_authorization",
    ]  # Basic and 'Token' are other authentication methods: no token (RFC 6750 section 3.1)
    logged = caplog.text
    for secret in (valid, expired, forged, password, basic):
        assert secret not in logged
    for token in (valid, expired, forged):
        assert token.split(".")[2] not in logged  # not even the signature
