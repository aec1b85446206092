"""The listener and the upstream link: TLS both ways, IPv6 loopback, resets, logs, warnings."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import uuid
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.certificates import lab_certificate
from tests.conftest import (
    GatewayStarter,
    RecordingUpstream,
    free_port,
    mint,
    raw_request,
)


def bearer(token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token or mint()}"}


async def test_tls_listener_serves_https(upstream: RecordingUpstream, start_gateway: GatewayStarter, tmp_path: Path) -> None:
    cert, key = lab_certificate(tmp_path, "labgate")
    tls = {"cert": str(cert), "key": str(key)}
    gateway = await start_gateway(upstream.url, listen={"address": "127.0.0.1", "port": free_port(), "tls": tls})
    assert gateway.url.startswith("https://")
    async with aiohttp.ClientSession() as session:
        trusting = ssl.create_default_context(cafile=str(cert))
        async with session.get(f"{gateway.url}/demo/api/hosts", headers=bearer(), ssl=trusting) as response:
            assert response.status == 200
        with pytest.raises(aiohttp.ClientError):  # plain HTTP on the TLS port gets nowhere
            async with session.get(f"http://127.0.0.1:{gateway.port}/demo/api/hosts", headers=bearer()) as response:
                await response.read()
    assert len(upstream.received) == 1


def ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


@pytest.mark.skipif(not ipv6_loopback_available(), reason="this machine has no IPv6 loopback (::1)")
async def test_ipv6_loopback_listener_and_client_ip(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    gateway = await start_gateway(upstream.url, listen={"address": "::1", "port": port})
    assert gateway.config.listen.address == "::1"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"http://[::1]:{port}/demo/api/hosts", headers=bearer()) as response:
            assert response.status == 200
    assert upstream.received[0].headers["x-forwarded-for"] == ["::1"]


async def upstream_that_resets() -> tuple[asyncio.Server, str]:
    async def reset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readline()
        writer.transport.abort()  # RST, no answer

    server = await asyncio.start_server(reset, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def test_upstream_reset_is_502_json(start_gateway: GatewayStarter) -> None:
    server, url = await upstream_that_resets()
    async with server:
        gateway = await start_gateway(url)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{gateway.url}/demo/api/hosts", headers=bearer()) as response:
                body = await response.json()
    assert (response.status, body["reason"], body["error"]) == (502, "upstream_unreachable", "bad_gateway")


async def https_upstream(directory: Path) -> tuple[web.AppRunner, str, Path]:
    cert, key = lab_certificate(directory, "appliance")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert), str(key))

    async def hosts(request: web.Request) -> web.Response:
        return web.json_response({"hosts": []})

    app = web.Application()
    app.router.add_get("/api/hosts", hosts)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    return runner, f"https://127.0.0.1:{port}", cert


@pytest.mark.parametrize(
    "tls, expected",
    [
        ({}, 502),  # verify on by default: a self-signed appliance is refused
        ({"verify": False}, 200),  # lab gear
        ("ca_file", 200),  # trust the appliance's own CA
    ],
    ids=["verify_default_refuses_self_signed", "verify_off", "ca_file"],
)
async def test_upstream_tls_settings(
    start_gateway: GatewayStarter, tmp_path: Path, tls: object, expected: int
) -> None:
    runner, url, cert = await https_upstream(tmp_path)
    try:
        upstream_tls = {"verify": True, "ca_file": str(cert)} if tls == "ca_file" else tls
        gateway = await start_gateway(url, upstream={"tls": upstream_tls})
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{gateway.url}/demo/api/hosts", headers=bearer()) as response:
                assert response.status == expected
                if expected == 502:
                    assert (await response.json())["reason"] == "upstream_unreachable"
    finally:
        await runner.cleanup()


async def test_decision_log_is_json_and_names_the_token_by_hash_only(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await start_gateway(upstream.url)
    token = mint()
    caplog.set_level(logging.INFO, logger="labgate.decisions")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gateway.url}/demo/api/hosts?sort=secretvalue", headers=bearer(token)) as response:
            assert response.status == 403
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "labgate.decisions"]
    assert len(lines) == 1
    record = lines[0]
    assert record["decision"] == "deny"
    assert record["reason"] == "query_param_not_allowed"
    assert record["rule"] == "demo/reader/query"
    assert record["token_type"] == "reader"
    assert len(record["token_hash"]) == 12
    assert token not in caplog.text
    assert token.split(".")[2] not in caplog.text
    assert "secretvalue" not in caplog.text  # the query string is never logged


async def test_decision_log_denials_only(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await start_gateway(upstream.url, decision_log="denials")
    caplog.set_level(logging.INFO, logger="labgate.decisions")
    async with aiohttp.ClientSession() as session:
        for target in ("/demo/api/hosts", "/demo/api/nothing"):
            async with session.get(f"{gateway.url}{target}", headers=bearer()) as response:
                await response.read()
    reasons = [json.loads(r.getMessage())["reason"] for r in caplog.records if r.name == "labgate.decisions"]
    assert reasons == ["route_not_allowed"]


async def test_metrics_never_carry_tokens_paths_or_ips(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url)
    token = mint()
    async with aiohttp.ClientSession() as session:
        for target in ("/demo/api/hosts", "/demo/api/hosts/uniquepath123", "/demo/api/nope?sort=1"):
            async with session.get(f"{gateway.url}{target}", headers=bearer(token)) as response:
                await response.read()
        async with session.get(f"{gateway.url}/metrics") as response:
            text = await response.text()
    assert "uniquepath123" not in text and "/api" not in text
    assert token.split(".")[2] not in text
    assert "127.0.0.1" not in text
    assert 'labgate_token_cache_lookups_total{result="hit",upstream="demo"} 2.0' in text


async def test_warns_at_start_when_ip_rules_have_no_trusted_proxies(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="labgate")
    await start_gateway(upstream.url)
    assert "client_ips rules compare the TCP peer" in caplog.text


async def test_warns_when_every_address_is_a_trusted_proxy(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="labgate")
    await start_gateway(upstream.url, trusted_proxies=["0.0.0.0/0"])
    assert "client_ips rules protect nothing" in caplog.text


async def test_warns_once_about_an_untrusted_peer_sending_forwarding_headers(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, caplog: pytest.LogCaptureFixture
) -> None:
    gateway = await start_gateway(upstream.url, trusted_proxies=["192.0.2.1"])
    caplog.set_level(logging.WARNING, logger="labgate")
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            headers = {**bearer(), "X-Forwarded-For": "10.9.0.1"}
            async with session.get(f"{gateway.url}/demo/api/hosts", headers=headers) as response:
                await response.read()
    assert caplog.text.count("is not in trusted_proxies") == 1


async def test_too_many_headers_is_refused_as_json(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url)
    extra = "".join(f"X-H{i}: v\r\n" for i in range(150))
    response = await raw_request(gateway.port, f"GET /demo/api/hosts HTTP/1.1\r\nHost: x\r\n{extra}\r\n")
    assert response.status in (400, 431)
    assert response.json()["reason"] in ("bad_request", "headers_too_large")
    assert upstream.received == []


async def upstream_with_raw_answer(answer: bytes) -> tuple[asyncio.Server, str]:
    """An appliance that reads one request head and writes ``answer`` verbatim, then closes."""

    async def respond(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(answer)
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(respond, "127.0.0.1", 0)
    return server, f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"


async def test_small_answers_pass_through_unchanged(start_gateway: GatewayStarter) -> None:
    server, url = await upstream_with_raw_answer(
        b"HTTP/1.1 201 Created\r\nContent-Length: 5\r\nX-Appliance: svt\r\nETag: \"v1\"\r\n\r\nhello"
    )
    async with server:
        gateway = await start_gateway(url)
        response = await raw_request(gateway.port, f"GET /demo/api/hosts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {mint()}\r\n\r\n")
    assert (response.status, response.body) == (201, b"hello")
    assert response.headers["x-appliance"] == "svt" and response.headers["etag"] == '"v1"'
    # aiohttp labels unlabelled content (RFC 9110 section 8.3); see the README.
    assert response.headers["content-type"] == "application/octet-stream"


async def test_appliance_content_type_and_encoding_pass_unchanged(start_gateway: GatewayStarter) -> None:
    server, url = await upstream_with_raw_answer(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/vnd.simplivity.v1.14+json\r\n"
        b"Content-Encoding: gzip\r\nContent-Length: 4\r\n\r\n\x1f\x8b\x08\x00"
    )
    async with server:
        gateway = await start_gateway(url)
        response = await raw_request(gateway.port, f"GET /demo/api/hosts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {mint()}\r\n\r\n")
    assert response.headers["content-type"] == "application/vnd.simplivity.v1.14+json"
    assert response.headers["content-encoding"] == "gzip"
    assert response.body == b"\x1f\x8b\x08\x00"  # not decompressed on the way


async def test_head_answer_keeps_the_appliance_content_length(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url)
    async with aiohttp.ClientSession() as session:
        async with session.head(f"{gateway.url}/demo/api/hosts", headers=bearer()) as response:
            assert response.status == 200
            assert int(response.headers["Content-Length"]) > 0
            assert await response.read() == b""


async def test_small_answer_cut_short_is_502_json(start_gateway: GatewayStarter) -> None:
    server, url = await upstream_with_raw_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
    async with server:
        gateway = await start_gateway(url)
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{gateway.url}/demo/api/hosts", headers=bearer()) as response:
                body = await response.json()
    assert (response.status, body["reason"]) == (502, "upstream_unreachable")


async def test_large_answer_cut_short_cuts_the_client_connection(start_gateway: GatewayStarter) -> None:
    size = 1024 * 1024
    server, url = await upstream_with_raw_answer(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % size + b"x" * (100 * 1024)
    )
    async with server:
        gateway = await start_gateway(url)
        async with aiohttp.ClientSession() as session:
            with pytest.raises(aiohttp.ClientPayloadError):
                async with session.get(f"{gateway.url}/demo/api/download", headers=bearer()) as response:
                    assert response.status == 200
                    await response.read()
            async with session.get(f"{gateway.url}/metrics") as response:
                text = await response.text()
    assert 'labgate_upstream_errors_total{kind="body_interrupted",upstream="demo"} 1.0' in text


async def test_readyz_reports_the_store(upstream: RecordingUpstream, start_gateway: GatewayStarter, redis_server: object) -> None:
    from tests.redis_server import RedisServer

    assert isinstance(redis_server, RedisServer)
    gateway = await start_gateway(upstream.url, store={"type": "redis", "url": redis_server.url, "prefix": f"readyz-{uuid.uuid4().hex}:"})
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gateway.url}/readyz") as response:
            assert (response.status, (await response.json())["status"]) == (200, "ready")
        notices = "down"
        for _ in range(100):  # the revocation view's notice channel comes up within moments
            async with session.get(f"{gateway.url}/readyz") as response:
                notices = (await response.json())["revocation_notices"]
            if notices == "live":
                break
            await asyncio.sleep(0.05)
        assert notices == "live"
        redis_server.stop()
        try:
            async with session.get(f"{gateway.url}/readyz") as response:
                assert (response.status, (await response.json())["status"]) == (503, "store_unavailable")
            for _ in range(100):  # the view stops being trusted within its 0.25 s bound
                async with session.get(f"{gateway.url}/readyz") as response:
                    notices = (await response.json())["revocation_notices"]
                if notices != "live":
                    break
                await asyncio.sleep(0.05)
            assert notices in ("behind", "down")
        finally:
            redis_server.start()
        async with session.get(f"{gateway.url}/readyz") as response:
            assert response.status == 200  # recovered by itself


async def test_the_default_store_is_an_sqlite_file_next_to_the_config(
    upstream: RecordingUpstream, start_gateway: GatewayStarter
) -> None:
    gateway = await start_gateway(upstream.url)
    assert gateway.config.store.kind == "sqlite"
    assert gateway.config.store.path == gateway.config.file.parent.resolve() / "labgate.db"
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gateway.url}/readyz") as response:
            assert response.status == 200
    assert gateway.config.store.path.exists()
