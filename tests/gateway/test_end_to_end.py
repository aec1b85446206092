"""Through real sockets: what reaches the upstream, and what never does."""

from __future__ import annotations

import aiohttp
import pytest
from yarl import URL

from tests.conftest import GatewayStarter, RecordingUpstream, mint, raw_request


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def get(url: str, token: str | None = None, **kwargs: object) -> tuple[int, dict[str, object], dict[str, str]]:
    headers = dict(kwargs.pop("headers", {}) or {})  # type: ignore[call-overload]
    if token is not None:
        headers.update(bearer(token))
    method = str(kwargs.pop("method", "GET"))
    async with aiohttp.ClientSession() as session:
        async with session.request(method, URL(url, encoded=True), headers=headers, **kwargs) as response:  # type: ignore[arg-type]
            body = await response.json(content_type=None) if response.content_length != 0 else {}
            return response.status, body, dict(response.headers)


async def test_allowed_request_arrives_with_identical_path_and_query(
    upstream: RecordingUpstream, start_gateway: GatewayStarter
) -> None:
    gateway = await start_gateway(upstream.url)
    status, body, headers = await get(f"{gateway.url}/demo/api/h%6Fsts?limit=1&offset=0&limit=2", mint())
    assert status == 200
    assert [r.raw_path for r in upstream.received] == ["/api/h%6Fsts?limit=1&offset=0&limit=2"]
    assert headers["X-Request-ID"]


async def test_denied_query_never_reaches_the_upstream(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url)
    token = mint()
    status, body, _ = await get(f"{gateway.url}/demo/api/hosts?s%6Frt=name", token)
    assert status == 403
    assert body["reason"] == "query_param_not_allowed"
    assert set(body) == {"error", "error_description", "reason", "request_id"}
    assert token not in str(body)
    assert upstream.received == []


@pytest.mark.parametrize(
    "method, target, reason",
    [("GET", "/demo/api/hosts?s%6Frt=name", "query_param_not_allowed"), ("GET", "/demo/api/admin", "route_not_allowed")],
    ids=["query", "route"],
)
async def test_a_403_insufficient_scope_carries_the_bearer_challenge(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, method: str, target: str, reason: str
) -> None:
    """RFC 6750 section 3: "If the protected resource request does not include authentication
    credentials or does not contain an access token that enables access to the protected resource,
    the resource server MUST include the HTTP "WWW-Authenticate" response header field"; section 3.1:
    insufficient_scope "SHOULD respond with the HTTP 403 (Forbidden) status code"."""
    gateway = await start_gateway(upstream.url)
    status, body, headers = await get(f"{gateway.url}{target}", mint(), method=method)
    assert (status, body["reason"], body["error"]) == (403, reason, "insufficient_scope")
    assert headers["WWW-Authenticate"].startswith('Bearer realm="labgate", error="insufficient_scope", error_description="')
    assert upstream.received == []


async def test_answers_that_are_not_about_the_token_carry_no_challenge(
    upstream: RecordingUpstream, start_gateway: GatewayStarter
) -> None:
    gateway = await start_gateway(upstream.url)
    status, body, headers = await get(f"{gateway.url}/elsewhere/api/hosts", mint())
    assert (status, body["reason"]) == (404, "no_upstream")
    assert "WWW-Authenticate" not in headers


@pytest.mark.parametrize(
    "target, reason",
    [
        ("/demo/api/hosts/%2e%2e/admin", "ambiguous_path"),
        ("/demo/api/%2Fhosts", "ambiguous_path"),
        ("/demo/api/%252Fhosts", "ambiguous_path"),
        ("/demo/api/%5Chosts", "ambiguous_path"),
        ("/demo/api/../api/hosts", "ambiguous_path"),
        ("/demo/api/./hosts", "ambiguous_path"),
        ("/demo/api//hosts", "ambiguous_path"),
        ("/demo/api/hosts%00", "ambiguous_path"),
        ("/demo/api/hosts%3fsort=x", "ambiguous_path"),
        ("/demo/api/ho%zzsts", "ambiguous_path"),
        ("/demo/api/h%FFsts", "ambiguous_path"),
        ("/demo/api;x=1/hosts", "ambiguous_path"),
        ("/demo/api/hosts?a;b=1", "bad_query"),
        ("/demo/api/hosts?=1", "bad_query"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
async def test_ambiguous_targets_are_refused_before_policy(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, target: str, reason: str
) -> None:
    gateway = await start_gateway(upstream.url)
    token = mint()
    head = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    response = await raw_request(gateway.port, head)
    assert response.status == 400
    assert response.json()["reason"] == reason
    assert token not in response.body.decode()
    assert upstream.received == []


async def test_absolute_form_target_is_refused(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url)
    head = f"GET http://evil.example/demo/api/hosts HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {mint()}\r\nConnection: close\r\n\r\n"
    response = await raw_request(gateway.port, head)
    assert response.status == 400
    assert upstream.received == []


async def test_route_and_method_denials(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url)
    token = mint()
    assert (await get(f"{gateway.url}/demo/api/tasks", token))[1]["reason"] == "route_not_allowed"
    assert (await get(f"{gateway.url}/demo/api/hosts", token, method="DELETE"))[1]["reason"] == "method_not_allowed"
    assert upstream.received == []


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "PROPFIND"])
async def test_unsupported_methods_are_refused(upstream: RecordingUpstream, start_gateway: GatewayStarter, method: str) -> None:
    gateway = await start_gateway(upstream.url)
    target = "127.0.0.1:443" if method == "CONNECT" else "/demo/api/hosts"
    head = f"{method} {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {mint({'role': 'admin'})}\r\nConnection: close\r\n\r\n"
    response = await raw_request(gateway.port, head)
    assert response.status in (400, 405)
    assert response.json()["reason"] in ("method_not_supported", "bad_request", "ambiguous_path")
    assert upstream.received == []


async def test_hop_by_hop_and_client_identity_headers_are_not_forwarded(
    upstream: RecordingUpstream, start_gateway: GatewayStarter
) -> None:
    gateway = await start_gateway(upstream.url)
    head = (
        f"GET /demo/api/hosts HTTP/1.1\r\nHost: labgate.test\r\nAuthorization: Bearer {mint()}\r\n"
        "Connection: keep-alive, X-Secret-Hop\r\nX-Secret-Hop: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\n"
        "Upgrade: websocket\r\nX-Forwarded-For: 6.6.6.6\r\n"
        "X-Forwarded-User: admin\r\nX-Real-IP: 6.6.6.6\r\nForwarded: for=6.6.6.6\r\nX-Custom: kept\r\n\r\n"
    )
    response = await raw_request(gateway.port, head)
    assert response.status == 200
    [received] = upstream.received
    for name in ("x-secret-hop", "keep-alive", "te", "upgrade", "x-forwarded-user", "x-real-ip", "forwarded"):
        assert name not in received.headers, name
    assert received.headers["x-forwarded-for"] == ["127.0.0.1"]
    assert received.headers["x-forwarded-proto"] == ["http"]
    assert received.headers["x-forwarded-host"] == ["labgate.test"]
    assert received.headers["x-custom"] == ["kept"]
    assert received.headers["host"] == [upstream.url.removeprefix("http://")]
    # and the appliance's own hop-by-hop headers do not come back
    assert "x-upstream-secret" not in response.headers
    assert "keep-alive" not in response.headers


async def test_upstream_refusing_connections_is_502(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    from tests.conftest import free_port

    gateway = await start_gateway(f"http://127.0.0.1:{free_port()}")
    status, body, _ = await get(f"{gateway.url}/demo/api/hosts", mint())
    assert (status, body["reason"], body["error"]) == (502, "upstream_unreachable", "bad_gateway")


async def test_slow_upstream_is_504(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    upstream.slow_seconds = 5
    gateway = await start_gateway(upstream.url)
    gateway_upstream = gateway.config.upstreams[0]
    assert gateway_upstream.read_timeout == 2
    status, body, _ = await get(f"{gateway.url}/demo/api/slow", mint())
    assert (status, body["reason"]) == (504, "upstream_timeout")


async def test_oversized_header_is_431_json(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url)
    head = f"GET /demo/api/hosts HTTP/1.1\r\nHost: x\r\nX-Big: {'a' * 20000}\r\nConnection: close\r\n\r\n"
    response = await raw_request(gateway.port, head)
    assert response.status == 431
    assert response.json()["reason"] == "headers_too_large"
    assert upstream.received == []


async def test_oversized_header_never_logs_the_token(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await start_gateway(upstream.url)
    token = mint() + "A" * 20000
    head = f"GET /demo/api/hosts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    caplog.set_level("DEBUG")
    response = await raw_request(gateway.port, head)
    assert response.status == 431
    assert token[:40] not in caplog.text


async def test_body_larger_than_limit_is_413_and_not_forwarded(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url, limits={"max_body_bytes": 1000})
    head = f"PUT /demo/api/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {mint()}\r\nContent-Length: 5000\r\n\r\n"
    response = await raw_request(gateway.port, head, b"x" * 5000)
    assert (response.status, response.json()["reason"]) == (413, "body_too_large")
    assert upstream.received == []


async def test_chunked_body_over_limit_is_413(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url, limits={"max_body_bytes": 1000})

    async def chunks():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"y" * 500

    async with aiohttp.ClientSession() as session:
        async with session.put(f"{gateway.url}/demo/api/upload", data=chunks(), headers=bearer(mint())) as response:
            assert response.status == 413
            assert (await response.json())["reason"] == "body_too_large"
    assert all(r.body_size <= 1000 for r in upstream.received)


async def test_request_body_is_forwarded_intact(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url)
    status, body, _ = await get(f"{gateway.url}/demo/api/upload", mint(), method="PUT", data=b"z" * 300_000)
    assert status == 200 and body["received_bytes"] == 300_000
    assert upstream.received[0].headers["content-length"] == ["300000"]


async def test_host_routing_and_unknown_upstream(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url)
    status, body, _ = await get(f"{gateway.url}/elsewhere/api/hosts", mint())
    assert (status, body["reason"]) == (404, "no_upstream")


async def test_client_ip_from_trusted_proxy_header(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url, trusted_proxies=["127.0.0.1"])
    token = mint({"role": "office"})
    allowed = await get(f"{gateway.url}/demo/api/hosts", token, headers={"X-Forwarded-For": "10.9.8.7"})
    denied = await get(f"{gateway.url}/demo/api/hosts", token, headers={"X-Forwarded-For": "10.9.8.7, 192.0.2.1"})
    garbage = await get(f"{gateway.url}/demo/api/hosts", token, headers={"X-Forwarded-For": "010.9.8.7"})
    assert allowed[0] == 200
    assert (denied[0], denied[1]["reason"]) == (403, "client_ip_not_allowed")
    assert (garbage[0], garbage[1]["reason"]) == (403, "client_ip_unknown")
    assert len(upstream.received) == 1
    assert upstream.received[0].headers["x-forwarded-for"] == ["10.9.8.7"]


async def test_forwarded_for_from_untrusted_peer_is_ignored(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url)
    status, body, _ = await get(
        f"{gateway.url}/demo/api/hosts", mint({"role": "office"}), headers={"X-Forwarded-For": "10.9.8.7"}
    )
    assert (status, body["reason"]) == (403, "client_ip_not_allowed")


async def test_health_ready_and_metrics(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url)
    await get(f"{gateway.url}/demo/api/hosts?sort=x", mint())
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gateway.url}/healthz") as response:
            assert response.status == 200
        async with session.get(f"{gateway.url}/readyz") as response:
            assert response.status == 200
        async with session.get(f"{gateway.url}/metrics") as response:
            text = await response.text()
    assert (
        'labgate_requests_total{decision="deny",reason="query_param_not_allowed",token_type="reader",upstream="demo"} 1.0'
        in text
    )
    assert "labgate_request_duration_seconds_bucket" in text


async def test_response_body_streams_back(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    upstream.download_size = 5 * 1024 * 1024
    gateway = await start_gateway(upstream.url)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gateway.url}/demo/api/download", headers=bearer(mint())) as response:
            assert response.status == 200
            assert response.headers["Content-Length"] == str(upstream.download_size)
            total = 0
            async for chunk in response.content.iter_chunked(1 << 16):
                total += len(chunk)
    assert total == upstream.download_size


async def test_slow_header_sender_is_disconnected(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    import asyncio

    gateway = await start_gateway(upstream.url, limits={"header_timeout": 0.5})
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    writer.write(b"GET /demo/api/hosts HTTP/1.1\r\nHost: x\r\n")
    await writer.drain()
    async with asyncio.timeout(5):
        assert await reader.read() == b""  # closed by labgate, well before 5 s
    writer.close()


async def test_own_endpoints_move_to_configured_paths(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(
        upstream.url, endpoints={"health": "/-/health", "ready": "/-/ready", "metrics": "/-/metrics"}
    )
    async with aiohttp.ClientSession() as session:
        for path in ("/-/health", "/-/ready", "/-/metrics"):
            async with session.get(f"{gateway.url}{path}") as response:
                assert response.status == 200, path
        async with session.get(f"{gateway.url}/metrics") as response:
            # the old path is no longer labgate's: no upstream serves it
            assert (response.status, (await response.json())["reason"]) == (404, "no_upstream")
    assert upstream.received == []


async def test_upstream_base_path_is_prepended(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url + "/appliance/v1")
    status, _, _ = await get(f"{gateway.url}/demo/api/hosts?limit=1", mint())
    assert status == 200
    assert [r.raw_path for r in upstream.received] == ["/appliance/v1/api/hosts?limit=1"]


ROUTE_QUERY_PACK = """
pack: demo
token_types:
  reader:
    routes:
      - GET /api/hosts
      - route: POST /api/backups/{bkpId}/restore
        query: {allow: [restore_original]}
    query:
      allow: [offset, limit]
  admin: {path_prefixes: [/api]}
  office: {routes: [GET /api/hosts]}
  session: {routes: [GET /api/hosts]}
"""


async def test_a_route_query_rule_allows_its_parameter_on_that_route_alone(
    upstream: RecordingUpstream, start_gateway: GatewayStarter
) -> None:
    gateway = await start_gateway(upstream.url, pack_text=ROUTE_QUERY_PACK)
    token = mint({"role": "reader"})
    status, _, _ = await get(f"{gateway.url}/demo/api/backups/b1/restore?restore_original=false", token, method="POST")
    assert status == 200
    status, body, _ = await get(f"{gateway.url}/demo/api/hosts?restore_original=true", token)
    assert (status, body["reason"]) == (403, "query_param_not_allowed")
    status, body, _ = await get(f"{gateway.url}/demo/api/backups/b1/restore?offset=1", token, method="POST")
    assert (status, body["reason"]) == (403, "query_param_not_allowed")
    assert [(r.method, r.raw_path) for r in upstream.received] == [("POST", "/api/backups/b1/restore?restore_original=false")]
