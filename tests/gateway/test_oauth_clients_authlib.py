"""Authlib (and PyJWT's JWKS client) against labgate's token service, unchanged, over TLS.

What a standard client does with labgate: discover and validate its RFC 8414
metadata, get tokens by client credentials (Basic and body) and by password,
refresh them by itself with rotation, see a reused refresh token end the
chain as its own ``invalid_grant``, verify access tokens through the JWKS
URL, and call an appliance through labgate with its session.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from cryptography.hazmat.primitives.asymmetric import ec

from tests.conftest import GatewayStarter, RecordingUpstream
from tests.gateway.oauth_clients import (
    PASSWORD,
    TlsLab,
    in_thread,
    start_tls_token_service,
)


@pytest.fixture
async def lab(start_http1_gateway: GatewayStarter, upstream: RecordingUpstream, tmp_path: Path) -> TlsLab:
    lab = await start_tls_token_service(start_http1_gateway, tmp_path, upstream)
    await in_thread(lab.add_alice)
    return lab


def session(lab: TlsLab, **kwargs: Any) -> OAuth2Session:
    return lab.trusting(OAuth2Session(token_endpoint=lab.token_endpoint, **kwargs))


def discover(lab: TlsLab) -> AuthorizationServerMetadata:
    with lab.trusting(requests.Session()) as http:
        answer = http.get(lab.metadata_url, timeout=10)
    answer.raise_for_status()
    metadata = AuthorizationServerMetadata(answer.json())
    metadata.validate()  # RFC 8414 section 2, as Authlib reads it: raises on any departure
    return metadata


async def test_authlib_validates_the_metadata_and_finds_the_endpoints_there(lab: TlsLab) -> None:
    """RFC 8414 section 2: "response_types_supported REQUIRED" (an empty array used to fail this)."""
    metadata = await in_thread(discover, lab)
    assert (metadata["issuer"], metadata["token_endpoint"]) == (lab.url, lab.token_endpoint)
    assert metadata["response_types_supported"] == ["none"]
    assert {"client_secret_basic", "client_secret_post"} <= set(metadata["token_endpoint_auth_methods_supported"])
    assert {"password", "client_credentials", "refresh_token"} <= set(metadata["grant_types_supported"])


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
async def test_client_credentials_by_each_auth_method_and_a_call_through_labgate(
    lab: TlsLab, upstream: RecordingUpstream, method: str
) -> None:
    client_id, secret = await in_thread(lab.add_client)

    def log_in_and_call() -> tuple[dict[str, Any], int, Any]:
        with session(lab, client_id=client_id, client_secret=secret, token_endpoint_auth_method=method) as client:
            token = client.fetch_token(lab.token_endpoint, grant_type="client_credentials", timeout=10)
            answer = client.get(lab.hosts, timeout=10)
            return dict(token), answer.status_code, answer.json()

    token, status, body = await in_thread(log_in_and_call)
    assert (token["token_type"], token["scope"]) == ("Bearer", "api-client") and "refresh_token" not in token
    assert status == 200 and body["path"] == "/api/hosts"
    assert [r.raw_path for r in upstream.received] == ["/api/hosts"]
    assert "authorization" not in upstream.received[0].headers  # labgate's token stays at labgate


async def test_wrong_client_credentials_surface_as_authlibs_invalid_client(lab: TlsLab) -> None:
    client_id, _ = await in_thread(lab.add_client)

    def log_in() -> str:
        # Errors are caught in the thread: a traceback kept alive would keep the client's TLS connection open.
        with session(lab, client_id=client_id, client_secret="not the secret") as client:
            try:
                client.fetch_token(lab.token_endpoint, grant_type="client_credentials", timeout=10)
            except OAuthError as exc:
                return str(exc.error)
        raise AssertionError("labgate issued a token")

    assert await in_thread(log_in) == "invalid_client"


async def test_unsupported_grant_and_wider_scope_surface_as_authlibs_own_errors(lab: TlsLab) -> None:
    def ask(**form: str) -> str:
        with session(lab, client_id="cli") as client:
            try:
                client.fetch_token(lab.token_endpoint, timeout=10, **form)
            except OAuthError as exc:
                return str(exc.error)
        raise AssertionError("labgate issued a token")

    device = "urn:ietf:params:oauth:grant-type:device_code"
    assert await in_thread(ask, grant_type=device, device_code="x") == "unsupported_grant_type"
    wider = {"username": "alice", "password": PASSWORD, "scope": "operator admin"}
    assert await in_thread(ask, **wider) == "invalid_scope"


async def test_auto_refresh_rotates_and_a_reused_refresh_token_ends_the_chain(lab: TlsLab) -> None:
    """Authlib refreshes a token it thinks is about to expire; labgate rotates the refresh token each time.

    RFC 9700 section 4.14.2: a used refresh token presented again revokes the chain, so the newest access
    token dies too and the newest refresh token no longer renews: each refusal is Authlib's own ``invalid_grant``.
    """
    client_id, secret = await in_thread(lab.add_client)
    updates: list[dict[str, Any]] = []

    def run() -> tuple[list[int], str, int, str]:
        # A leeway longer than the operator type's 15 minutes: every request finds the token "expiring".
        with session(lab, client_id=client_id, client_secret=secret, leeway=3600,
                     update_token=lambda token, **_: updates.append(dict(token))) as client:
            first = dict(client.fetch_token(lab.token_endpoint, username="alice", password=PASSWORD, timeout=10))
            statuses = [client.get(lab.hosts, timeout=10).status_code for _ in range(2)]
            newest = dict(client.token)
            try:
                client.refresh_token(lab.token_endpoint, refresh_token=first["refresh_token"], timeout=10)
            except OAuthError as exc:
                reused = str(exc.error)
            dead = lab.get(lab.hosts, newest["access_token"])
            try:
                client.refresh_token(lab.token_endpoint, refresh_token=newest["refresh_token"], timeout=10)
            except OAuthError as exc:
                return statuses, reused, dead.status_code, str(exc.error)
        raise AssertionError("the chain still renewed")

    statuses, reused, dead, newest_refused = await in_thread(run)
    assert statuses == [200, 200]
    assert len(updates) == 2  # one refresh per request
    refresh_tokens = [u["refresh_token"] for u in updates]
    assert len(set(refresh_tokens)) == 2  # rotated every time
    assert (reused, dead, newest_refused) == ("invalid_grant", 401, "invalid_grant")


async def test_access_tokens_verify_through_pyjwts_jwks_client_at_the_metadatas_jwks_uri(lab: TlsLab) -> None:
    client_id, secret = await in_thread(lab.add_client)

    def fetch() -> tuple[str, str]:
        metadata = discover(lab)
        with session(lab, client_id=client_id, client_secret=secret) as client:
            return client.fetch_token(lab.token_endpoint, grant_type="client_credentials", timeout=10)["access_token"], metadata["jwks_uri"]

    token, jwks_uri = await in_thread(fetch)
    assert jwks_uri == f"{lab.url}/.well-known/jwks.json"
    keys = jwt.PyJWKClient(jwks_uri, cache_keys=False, ssl_context=lab.ssl_context(), timeout=10)
    key = await in_thread(keys.get_signing_key_from_jwt, token)
    claims = jwt.decode(token, key, algorithms=["ES256", "RS256"], audience="demo", issuer=lab.url)
    assert (claims["sub"], claims["client_id"], claims["token_type"]) == ("alice", client_id, "api-client")
    assert claims["exp"] > time.time()
    # The published key verifies labgate's signature and nothing else: a token signed by another key under its kid fails.
    forged = jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256", headers={"kid": key.key_id, "typ": "at+jwt"})
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(forged, await in_thread(keys.get_signing_key_from_jwt, forged), algorithms=["ES256"], audience="demo", issuer=lab.url)


async def test_the_management_api_refuses_the_sessions_token_and_a_reset_secret_ends_it(lab: TlsLab) -> None:
    """A token never manages tokens; the administrator's reset makes the library's next login invalid_client."""
    client_id, secret = await in_thread(lab.add_client)

    def run() -> tuple[int, str, int, str]:
        with session(lab, client_id=client_id, client_secret=secret) as client:
            client.fetch_token(lab.token_endpoint, grant_type="client_credentials", timeout=10)
            managed = client.get(f"{lab.url}/-/admin/subjects", timeout=10)
            assert lab.admin("POST", f"/clients/{client_id}/reset-secret").status_code == 200
            after = client.get(lab.hosts, timeout=10)
            try:
                client.fetch_token(lab.token_endpoint, grant_type="client_credentials", timeout=10)
            except OAuthError as exc:
                return managed.status_code, managed.json()["reason"], after.status_code, str(exc.error)
        raise AssertionError("the old secret still logs in")

    managed, reason, after, relogin = await in_thread(run)
    assert (managed, reason) == (403, "token_management_forbidden")
    assert (after, relogin) == (401, "invalid_client")
