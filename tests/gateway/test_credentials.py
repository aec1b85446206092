"""Upstream credentials through a running gateway: the appliance sees labgate's credential, never the client's token."""

from __future__ import annotations

import base64
import json
import logging
import ssl
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from proxy.issuer.access_tokens import AccessTokenGrant, mint_access_token
from proxy.issuer.ring import KeyRing
from proxy.mocks.simplivity import SimplivityAccounts, SimplivityAppliance
from proxy.store.open import open_store
from tests.certificates import self_signed
from tests.conftest import (
    GatewayStarter,
    RecordingUpstream,
    RunningGateway,
    app_on_loopback,
    free_port,
    mint,
)

PASSWORD = "appliance-pa55word"
CLIENT_SECRET = "appliance-client-secret"
STATIC_TOKEN = "static-appliance-token"


@dataclass
class Appliance:
    """An appliance with its own OAuth token endpoint; it honours only tokens it issued and still holds.

    Like SimpliVity, its 401 answer names the token it refused.
    """

    url: str = ""
    logins: list[tuple[dict[str, str], str | None]] = field(default_factory=list)
    calls: list[list[str]] = field(default_factory=list)  # the Authorization headers of each API call
    valid: set[str] = field(default_factory=set)
    refuse_logins: bool = False

    async def token(self, request: web.Request) -> web.Response:
        form = {name: str(value) for name, value in (await request.post()).items()}
        self.logins.append((form, request.headers.get("Authorization")))
        if self.refuse_logins:
            return web.json_response({"error": "invalid_grant", "error_description": f"Invalid credentials for {form.get('username')}"}, status=400)
        token = f"appliance-{uuid.uuid4()}"
        self.valid.add(token)
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": 7199})

    async def api(self, request: web.Request) -> web.Response:
        values = request.headers.getall("Authorization", [])
        self.calls.append(values)
        token = values[0].removeprefix("Bearer ") if len(values) == 1 else ""
        if token not in self.valid:
            return web.json_response({"error": "invalid_token", "message": f"Access token expired: {token}"}, status=401)
        return web.json_response({"hosts": []})


@pytest.fixture
async def appliance() -> AsyncIterator[Appliance]:
    state = Appliance()
    app = web.Application()
    app.router.add_post("/oauth/token", state.token)
    app.router.add_route("*", "/api/{tail:.*}", state.api)
    async with app_on_loopback(app) as url:
        state.url = url
        yield state


def write_secrets(tmp_path: Path) -> None:
    (tmp_path / "appliance.token").write_text(STATIC_TOKEN + "\n")
    (tmp_path / "appliance.password").write_text(PASSWORD + "\n")
    (tmp_path / "client.secret").write_text(CLIENT_SECRET + "\n")


async def start_with(start_gateway: GatewayStarter, tmp_path: Path, url: str, credential: dict[str, Any], **upstream: Any) -> RunningGateway:
    write_secrets(tmp_path)
    return await start_gateway(url, upstream={"credential": credential, **upstream})


def password_login(token_url: str, **changes: Any) -> dict[str, Any]:
    return {
        "type": "oauth", "token_url": token_url, "grant": "password",
        "username": "svc-labgate", "password_file": "appliance.password", **changes,
    }


async def get(gateway: RunningGateway, path: str, token: str, **headers: str) -> tuple[int, bytes, dict[str, str]]:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{gateway.url}/demo{path}", headers={"Authorization": f"Bearer {token}", **headers}) as response:
            return response.status, await response.read(), dict(response.headers)


def header_values(upstream: RecordingUpstream) -> str:
    return "\n".join(value for received in upstream.received for values in received.headers.values() for value in values)


@pytest.mark.parametrize(
    "credential, expected",
    [
        ({"type": "bearer", "token_file": "appliance.token"}, f"Bearer {STATIC_TOKEN}"),
        (
            {"type": "basic", "username": "admin", "password_file": "appliance.password"},
            "Basic " + base64.b64encode(f"admin:{PASSWORD}".encode()).decode(),
        ),
    ],
    ids=["bearer", "basic"],
)
async def test_a_static_credential_replaces_the_clients_token(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, tmp_path: Path, credential: dict[str, Any], expected: str
) -> None:
    gateway = await start_with(start_gateway, tmp_path, upstream.url, credential)
    token = mint()
    for _ in range(2):
        status, _, _ = await get(gateway, "/api/hosts", token)
        assert status == 200
    assert [r.headers["authorization"] for r in upstream.received] == [[expected], [expected]]
    assert token not in header_values(upstream) and token.split(".")[2] not in header_values(upstream)


async def test_a_denied_request_needs_no_credential_and_logs_in_nowhere(
    appliance: Appliance, start_gateway: GatewayStarter, tmp_path: Path
) -> None:
    gateway = await start_with(start_gateway, tmp_path, appliance.url, password_login(f"{appliance.url}/oauth/token"))
    status, body, _ = await get(gateway, "/api/hosts?sort=name", mint())
    assert status == 403 and b"query_param_not_allowed" in body
    assert appliance.logins == [] and appliance.calls == []


async def test_an_oauth_password_login_at_the_simplivity_mock_serves_many_requests(
    start_gateway: GatewayStarter, tmp_path: Path
) -> None:
    simplivity = SimplivityAppliance(SimplivityAccounts(users={"svc-labgate@vsphere.local": PASSWORD}))
    async with app_on_loopback(simplivity.app()) as url:
        credential = password_login(f"{url}/api/oauth/token", username="svc-labgate@vsphere.local", client_id="simplivity")
        gateway = await start_with(start_gateway, tmp_path, url, credential)
        token = mint()
        for _ in range(5):
            status, body, _ = await get(gateway, "/api/hosts?limit=1", token)
            assert status == 200 and b'"hosts"' in body
    assert simplivity.received.count(("POST", "/api/oauth/token")) == 1
    assert len(simplivity.tokens) == 1


async def test_a_client_credentials_login_with_post_client_auth(
    appliance: Appliance, start_gateway: GatewayStarter, tmp_path: Path
) -> None:
    credential = {
        "type": "oauth", "token_url": f"{appliance.url}/oauth/token", "grant": "client_credentials",
        "client_id": "labgate", "client_secret_file": "client.secret", "client_auth": "post",
    }
    gateway = await start_with(start_gateway, tmp_path, appliance.url, credential)
    token = mint()
    assert (await get(gateway, "/api/hosts", token))[0] == 200
    assert (await get(gateway, "/api/hosts", token))[0] == 200
    [(form, authorization)] = appliance.logins
    assert form == {"grant_type": "client_credentials", "client_id": "labgate", "client_secret": CLIENT_SECRET}
    assert authorization is None
    [held] = appliance.valid
    assert appliance.calls == [[f"Bearer {held}"], [f"Bearer {held}"]]


async def test_a_failed_login_is_503_and_nothing_is_forwarded(
    appliance: Appliance, start_gateway: GatewayStarter, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    appliance.refuse_logins = True
    gateway = await start_with(start_gateway, tmp_path, appliance.url, password_login(f"{appliance.url}/oauth/token"))
    token = mint()
    status, body, headers = await get(gateway, "/api/hosts", token)
    assert status == 503 and headers["Content-Type"].startswith("application/json")
    answer = json.loads(body)
    assert (answer["error"], answer["reason"]) == ("temporarily_unavailable", "upstream_credential_unavailable")
    assert "the token endpoint answered 400" in answer["error_description"]
    status, body, _ = await get(gateway, "/api/hosts", token)  # within the pause: refused without a second attempt
    assert status == 503 and b"upstream_credential_unavailable" in body
    assert len(appliance.logins) == 1 and appliance.calls == []
    metrics = await metrics_text(gateway)
    assert 'labgate_upstream_errors_total{kind="upstream_credential_unavailable",upstream="demo"} 2.0' in metrics
    assert 'reason="upstream_credential_unavailable"' in metrics
    for text in (caplog.text, body.decode()):
        assert PASSWORD not in text and "svc-labgate" not in text and token not in text


async def test_a_401_from_the_appliance_is_never_passed_on_and_the_next_request_logs_in_again(
    appliance: Appliance, start_gateway: GatewayStarter, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    gateway = await start_with(start_gateway, tmp_path, appliance.url, password_login(f"{appliance.url}/oauth/token"))
    token = mint()
    assert (await get(gateway, "/api/hosts", token))[0] == 200
    [first] = appliance.valid
    appliance.valid.clear()  # the appliance ended the token (idle, restarted, revoked)
    status, body, headers = await get(gateway, "/api/hosts", token)
    assert status == 502 and b"upstream_credential_rejected" in body
    assert first not in body.decode() and "WWW-Authenticate" not in headers  # the appliance's answer named it
    assert b"the next request logs in again" in body
    assert (await get(gateway, "/api/hosts", token))[0] == 200
    assert len(appliance.logins) == 2
    [second] = appliance.valid
    assert appliance.calls == [[f"Bearer {first}"], [f"Bearer {first}"], [f"Bearer {second}"]]
    assert first not in caplog.text and second not in caplog.text and PASSWORD not in caplog.text


async def test_a_refused_static_credential_says_the_operator_must_replace_it(
    appliance: Appliance, start_gateway: GatewayStarter, tmp_path: Path
) -> None:
    gateway = await start_with(start_gateway, tmp_path, appliance.url, {"type": "bearer", "token_file": "appliance.token"})
    status, body, _ = await get(gateway, "/api/hosts", mint())
    assert status == 502 and b"upstream_credential_rejected" in body
    described = json.loads(body)["error_description"]
    assert "the operator must replace the upstream's credential in the config" in described
    assert "logs in again" not in described and STATIC_TOKEN not in body.decode()


async def test_an_issuer_upstream_never_receives_the_clients_token(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, tmp_path: Path
) -> None:
    """The client's bearer token is not forwarded to an upstream whose source is issuer: labgate's tokens are for labgate."""
    gateway = await start_gateway(
        upstream.url, upstream={"token_source": {"type": "issuer"}}, issuer={"url": "https://labgate.lab.example"}
    )
    token = await issued_token(gateway)
    status, _, _ = await get(gateway, "/api/hosts", token)
    assert status == 200
    [received] = upstream.received
    assert "authorization" not in received.headers
    assert token not in header_values(upstream) and token.split(".")[2] not in header_values(upstream)


async def test_an_issuer_upstream_with_a_credential_receives_only_the_credential(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, tmp_path: Path
) -> None:
    write_secrets(tmp_path)
    gateway = await start_gateway(
        upstream.url,
        upstream={"token_source": {"type": "issuer"}, "credential": {"type": "bearer", "token_file": "appliance.token"}},
        issuer={"url": "https://labgate.lab.example"},
    )
    token = await issued_token(gateway)
    assert (await get(gateway, "/api/hosts", token))[0] == 200
    [received] = upstream.received
    assert received.headers["authorization"] == [f"Bearer {STATIC_TOKEN}"]
    assert token.split(".")[2] not in header_values(upstream)


async def test_the_login_at_an_https_appliance_uses_the_upstreams_tls(start_gateway: GatewayStarter, tmp_path: Path) -> None:
    """A self-signed lab appliance trusted through the upstream's ca_file: its token endpoint is trusted the same way."""
    cert_file, context = lab_certificate(tmp_path)
    simplivity = SimplivityAppliance(SimplivityAccounts(users={"svc-labgate": PASSWORD}))
    runner = web.AppRunner(simplivity.app(), access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    try:
        url = f"https://127.0.0.1:{port}"
        credential = password_login(f"{url}/api/oauth/token", client_id="simplivity")
        gateway = await start_with(start_gateway, tmp_path, url, credential, tls={"ca_file": str(cert_file)})
        status, body, _ = await get(gateway, "/api/hosts", mint())
        assert status == 200 and b'"hosts"' in body
    finally:
        await runner.cleanup()
    assert simplivity.received.count(("POST", "/api/oauth/token")) == 1


async def issued_token(gateway: RunningGateway) -> str:
    """A labgate access token for the upstream ``demo``, signed with the key ring the gateway reads."""
    config = gateway.config
    assert config.issuer is not None
    store = open_store(config.store)
    ring = KeyRing(store, config.issuer)
    try:
        key = await ring.signing_key()
        grant = AccessTokenGrant(subject="alice", client_id="client-1", token_type="reader", audience="demo", lifetime=300)
        return mint_access_token(key, config.issuer, grant, now=time.time()).token
    finally:
        await ring.close()
        await store.close()


def lab_certificate(directory: Path) -> tuple[Path, ssl.SSLContext]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert_file, key_file = directory / "appliance.crt", directory / "appliance.key"
    cert_file.write_bytes(self_signed(key, "appliance", addresses=("127.0.0.1",)).public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(cert_file), str(key_file))
    return cert_file, context


async def metrics_text(gateway: RunningGateway) -> str:
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{gateway.url}/metrics") as response:
            return await response.text()
