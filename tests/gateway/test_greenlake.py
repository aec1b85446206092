"""GreenLake Compute Ops Management end to end: the ``jwt`` source against GreenLake's JWKS (HPE GreenLake access-token blog post).

A mock GreenLake (proxy.mocks.greenlake) issues RS256 client-credentials
tokens and publishes its keys; labgate verifies them against that JWKS and
holds them to the shipped ``greenlake`` pack's ``api-client`` type.  Keys
rotate at GreenLake while labgate runs.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.mocks.greenlake import JWKS_PATH, ApiCredential, GreenLakeAppliance
from proxy.store.sqlite import SqliteStore
from tests.conftest import GatewayStarter, RunningGateway, app_on_loopback

POLICIES = str(Path(__file__).resolve().parents[2] / "policies")
SERVERS = "/compute-ops-mgmt/v1/servers"


@pytest.fixture
async def greenlake() -> AsyncIterator[tuple[GreenLakeAppliance, str]]:
    mock = GreenLakeAppliance()
    async with app_on_loopback(mock.app()) as url:
        yield mock, url


async def start(start_gateway: GatewayStarter, mock: GreenLakeAppliance, url: str) -> RunningGateway:
    source = {
        "type": "jwt",
        "algorithms": ["RS256"],
        "jwks_url": f"{url}{JWKS_PATH}",
        "jwks_min_refetch_interval": 0,  # a rotated-in kid is fetched at once
        "issuer": "https://sso.common.cloud.hpe.com",
        "audience": "external_api",
        "required_claims": ["client_id", "iat"],
        "types": [{"token_type": "api-client", "match": {"client_id": {"present": True}}}],
    }
    return await start_gateway(
        url, policies=[POLICIES], upstream={"name": "greenlake", "path_prefix": "/gl", "pack": "greenlake", "token_source": source}
    )


async def client_credentials(url: str, credential: ApiCredential) -> str:
    """A token from GreenLake's SSO endpoint, which clients reach directly (labgate fronts the API)."""
    form = {"grant_type": "client_credentials", "client_id": credential.client_id, "client_secret": credential.client_secret}
    async with aiohttp.ClientSession() as client:
        async with client.post(f"{url}/as/token.oauth2", data=form) as response:
            body = await response.json()
            assert response.status == 200, body
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 7199)
    token = body["access_token"]
    assert isinstance(token, str)
    return token


async def call(gateway: RunningGateway, path: str, token: str, method: str = "GET") -> tuple[int, Any]:
    async with aiohttp.ClientSession() as client:
        async with client.request(method, f"{gateway.url}/gl{path}", headers={"Authorization": f"Bearer {token}"}) as response:
            return response.status, await response.json(content_type=None)


def forwarded(mock: GreenLakeAppliance) -> list[tuple[str, str]]:
    """What reached the Compute Ops Management API (not the token endpoint or the keys)."""
    return [(m, p) for m, p in mock.received if p.startswith("/compute-ops")]


async def test_a_client_credentials_token_lists_servers(greenlake: tuple[GreenLakeAppliance, str], start_gateway: GatewayStarter) -> None:
    mock, url = greenlake
    gateway = await start(start_gateway, mock, url)
    token = await client_credentials(url, mock.create_client())
    query = "?offset=0&limit=2&filter=state/managed%20eq%20true&select=id,name,state"
    status, body = await call(gateway, SERVERS + query, token)
    assert status == 200, body
    assert (body["offset"], body["count"], body["total"]) == (0, 2, 2)
    assert {tuple(sorted(item)) for item in body["items"]} == {("id", "name", "state")}
    assert forwarded(mock) == [("GET", SERVERS + query)]
    # The older prefix of the vendor document's own example is the same API.
    status, body = await call(gateway, "/compute-ops/v1beta2/servers", token)
    assert status == 200 and body["items"][0]["type"] == "compute-ops/server"


async def test_a_path_outside_compute_ops_management_is_403_and_never_forwarded(
    greenlake: tuple[GreenLakeAppliance, str], start_gateway: GatewayStarter
) -> None:
    mock, url = greenlake
    gateway = await start(start_gateway, mock, url)
    token = await client_credentials(url, mock.create_client())
    for path in ("/identity/v1/users", "/compute-ops-mgmtx/v1/servers"):
        status, body = await call(gateway, path, token)
        assert (status, body["reason"]) == (403, "prefix_not_allowed"), path
    assert forwarded(mock) == []


@pytest.mark.parametrize(
    "attribute, value, reason",
    [
        ("audience", "internal_api", "wrong_audience"),
        ("issuer", "https://sso.other.example", "wrong_issuer"),
    ],
)
async def test_a_token_for_another_audience_or_from_another_issuer_is_refused(
    greenlake: tuple[GreenLakeAppliance, str], start_gateway: GatewayStarter, attribute: str, value: str, reason: str
) -> None:
    mock, url = greenlake
    gateway = await start(start_gateway, mock, url)
    setattr(mock, attribute, value)  # same keys, other claims
    token = await client_credentials(url, mock.create_client())
    status, body = await call(gateway, SERVERS, token)
    assert (status, body["reason"], body["error"]) == (401, reason, "invalid_token")
    assert token not in json.dumps(body)
    assert forwarded(mock) == []


async def test_an_expired_token_is_401_and_never_forwarded(
    greenlake: tuple[GreenLakeAppliance, str], start_gateway: GatewayStarter
) -> None:
    mock, url = greenlake
    gateway = await start(start_gateway, mock, url)
    mock.clock = lambda: time.time() - 7200 - 120  # issued 2 h 2 min ago: exp is 2 minutes past
    token = await client_credentials(url, mock.create_client())
    status, body = await call(gateway, SERVERS, token)
    assert (status, body["reason"]) == (401, "token_expired")
    assert forwarded(mock) == []


async def test_a_key_rotation_at_greenlake_while_labgate_runs(
    greenlake: tuple[GreenLakeAppliance, str], start_gateway: GatewayStarter
) -> None:
    mock, url = greenlake
    gateway = await start(start_gateway, mock, url)
    credential = mock.create_client()
    before = await client_credentials(url, credential)
    # Signed by the old key, first shown after the rotation (another client: a token of the
    # same client and second would be the same string, which labgate has cached).
    unused_old = await client_credentials(url, mock.create_client())
    status, _ = await call(gateway, SERVERS, before)
    assert status == 200
    assert mock.received.count(("GET", JWKS_PATH)) == 1
    old_kid = mock.kid
    assert mock.rotate_key() != old_kid  # the old key leaves the JWKS
    after = await client_credentials(url, credential)
    status, body = await call(gateway, SERVERS, after)
    assert status == 200, body  # labgate refetched the keys for the new kid
    assert mock.received.count(("GET", JWKS_PATH)) == 2
    mock.received.clear()
    status, body = await call(gateway, SERVERS, unused_old)
    assert (status, body["reason"]) == (401, "unknown_key")
    assert forwarded(mock) == []


async def test_a_rotation_that_keeps_the_old_key_published_keeps_its_tokens_good(
    greenlake: tuple[GreenLakeAppliance, str], start_gateway: GatewayStarter
) -> None:
    mock, url = greenlake
    gateway = await start(start_gateway, mock, url)
    credential = mock.create_client()
    first = await client_credentials(url, credential)
    unused_old = await client_credentials(url, mock.create_client())
    assert (await call(gateway, SERVERS, first))[0] == 200
    mock.rotate_key(keep_old=True)
    for token in (await client_credentials(url, credential), unused_old):
        status, body = await call(gateway, SERVERS, token)
        assert status == 200, body


async def test_a_reset_secret_kills_the_tokens_at_greenlake_and_labgate_revokes_by_client(
    greenlake: tuple[GreenLakeAppliance, str], start_gateway: GatewayStarter
) -> None:
    mock, url = greenlake
    gateway = await start(start_gateway, mock, url)
    reset_only, revoked_too = mock.create_client(), mock.create_client()
    first, second = await client_credentials(url, reset_only), await client_credentials(url, revoked_too)
    mock.reset_secret(reset_only.client_id)
    mock.reset_secret(revoked_too.client_id)
    # The signature still verifies, so labgate forwards, and GreenLake answers with its own error body.
    status, body = await call(gateway, SERVERS, first)
    assert status == 401 and set(body) == {"httpStatusCode", "errorCode", "message", "debugId", "errorDetails"}
    # labgate refuses the client's tokens itself once told (labgate revoke --client).
    assert gateway.config.store.path is not None
    store = SqliteStore(gateway.config.store.path)
    try:
        await store.revoke("client", revoked_too.client_id, time.time())
    finally:
        await store.close()
    mock.received.clear()
    status, body = await call(gateway, SERVERS, second)
    assert (status, body["reason"]) == (401, "revoked")
    assert forwarded(mock) == []
