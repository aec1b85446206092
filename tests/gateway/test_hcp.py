"""HCP for cloud scale end to end: the ``observe`` source learns the tokens HCP issues (HCP for cloud scale "Access and authentication").

A mock HCP (proxy.mocks.hcp) issues JWT-looking tokens only it can check;
labgate passes its ``/auth/oauth/`` token endpoint through, learns each token
as the shipped ``hcp`` pack's ``password`` type, and holds it to the MAPI
(``POST /mapi/v1/<area>/<verb>``) and ``/api/admin``, with nothing it refuses
ever reaching the appliance.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from proxy.mocks.hcp import HcpAppliance
from proxy.store.base import TokenRecord
from proxy.store.sqlite import SqliteStore
from proxy.token_facts import token_fingerprint
from proxy.tokens.observe import REFRESH_KEY_PREFIX
from tests.conftest import GatewayStarter, RunningGateway, app_on_loopback

POLICIES = str(Path(__file__).resolve().parents[2] / "policies")
OBSERVE = {
    "type": "observe",
    "token_endpoint": "/auth/oauth/",  # as the vendor documents it, trailing slash included
    "types": [
        # The local admin (realm omitted, or Local in any case) and the realms this site
        # lets through share the pack's one type: HCP checks each user's own permissions.
        {"token_type": "password", "match": {"grant_type": "password", "realm": {"present": False}}},
        {"token_type": "password", "match": {"grant_type": "password", "realm": {"in_any_case": ["Local", "marketingUsers"]}}},
    ],
}
CLIENT = {"client_id": "my-client", "client_secret": "my-secret", "scope": "*"}
REALM_USER = {"grant_type": "password", "username": "user1", "password": "password1", "realm": "marketingUsers", **CLIENT}
LOCAL_ADMIN = {"grant_type": "password", "username": "admin", "password": "admin-pw", **CLIENT}


@pytest.fixture
async def hcp() -> AsyncIterator[tuple[HcpAppliance, str]]:
    mock = HcpAppliance()
    async with app_on_loopback(mock.app()) as url:
        yield mock, url


async def start(start_gateway: GatewayStarter, url: str) -> RunningGateway:
    return await start_gateway(
        url, policies=[POLICIES], upstream={"name": "hcp", "path_prefix": "/hcp", "pack": "hcp", "token_source": OBSERVE}
    )


async def token_call(gateway: RunningGateway, form: dict[str, str], path: str = "/auth/oauth/") -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as client:
        async with client.post(f"{gateway.url}/hcp{path}", data=form) as response:
            return response.status, await response.json(content_type=None)


async def get_tokens(gateway: RunningGateway, form: dict[str, str]) -> dict[str, Any]:
    status, body = await token_call(gateway, form)
    assert status == 200, body
    return body


async def call(
    gateway: RunningGateway, method: str, path: str, token: str, body: Any = None
) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as client:
        async with client.request(
            method, f"{gateway.url}/hcp{path}", json=body, headers={"Authorization": f"Bearer {token}"}
        ) as response:
            return response.status, await response.json(content_type=None)


async def stored(gateway: RunningGateway, key: str) -> TokenRecord | None:
    assert gateway.config.store.path is not None
    store = SqliteStore(gateway.config.store.path)
    try:
        return await store.get_token(key, time.time())
    finally:
        await store.close()


async def test_a_realm_user_password_grant_reaches_the_object_storage_mapi(
    hcp: tuple[HcpAppliance, str], start_gateway: GatewayStarter
) -> None:
    mock, url = hcp
    gateway = await start(start_gateway, url)
    tokens = await get_tokens(gateway, REALM_USER)
    assert tokens["access_token"].startswith("eyJ") and tokens["expires_in"] == 7200 and tokens["refresh_token"]
    # The form reached HCP as sent: realm, client and scope included.
    assert ("POST", "/auth/oauth/") in mock.received
    status, users = await call(gateway, "POST", "/mapi/v1/user/list", tokens["access_token"], {"count": 10, "nameFilter": "user"})
    assert status == 200 and [u["username"] for u in users] == ["user1"]
    status, components = await call(gateway, "POST", "/mapi/v1/storage_component/list", tokens["access_token"], {})
    assert status == 200 and components[0]["storageComponentConfig"]["state"] == "ACTIVE"
    record = await stored(gateway, token_fingerprint(tokens["access_token"]))
    assert record is not None
    assert (record.token_type, record.subject, record.client_id) == ("password", "user1", "my-client")


@pytest.mark.parametrize("realm", [None, "Local", "local", "LOCAL"], ids=["omitted", "Local", "local", "LOCAL"])
async def test_an_omitted_or_local_realm_is_the_local_admin(
    hcp: tuple[HcpAppliance, str], start_gateway: GatewayStarter, realm: str | None
) -> None:
    _, url = hcp
    gateway = await start(start_gateway, url)
    form = {**LOCAL_ADMIN, **({"realm": realm} if realm is not None else {})}
    tokens = await get_tokens(gateway, form)
    record = await stored(gateway, token_fingerprint(tokens["access_token"]))
    assert record is not None and (record.token_type, record.subject) == ("password", "admin")
    status, setup = await call(gateway, "GET", "/api/admin/setup", tokens["access_token"])
    assert status == 200 and "marketingUsers" in [r["name"] for r in setup["realms"]]


@pytest.mark.parametrize("path", ["/auth/oauth", "/auth/oauth/"])
async def test_the_documented_token_path_is_the_token_endpoint_with_or_without_its_slash(
    hcp: tuple[HcpAppliance, str], start_gateway: GatewayStarter, path: str
) -> None:
    """HCP: "you must request an authentication token from the system. To do this, you send an HTTP POST
    request to the method /auth/oauth." labgate is configured with /auth/oauth/ and takes both."""
    mock, url = hcp
    gateway = await start(start_gateway, url)
    status, tokens = await token_call(gateway, REALM_USER, path)
    assert status == 200, tokens
    assert ("POST", path) in mock.received
    assert (await call(gateway, "POST", "/mapi/v1/user/list", tokens["access_token"]))[0] == 200


async def test_a_realm_in_another_letter_case_is_for_hcp_to_judge(
    hcp: tuple[HcpAppliance, str], start_gateway: GatewayStarter
) -> None:
    """Realms are matched in any letter case: labgate forwards MarketingUsers, and HCP answers for its realm."""
    mock, url = hcp
    gateway = await start(start_gateway, url)
    status, body = await token_call(gateway, {**REALM_USER, "realm": "MarketingUsers"})
    assert mock.received == [("POST", "/auth/oauth/")]  # not refused by labgate: the form reached HCP
    assert "reason" not in body  # HCP's own answer (this mock knows the realm only as marketingUsers)
    status, body = await token_call(gateway, {**REALM_USER, "realm": "ſales"})  # non-ASCII look-alikes never match
    assert (status, body["reason"]) == (400, "grant_not_allowed")


async def test_expires_in_7200_is_how_long_labgate_remembers_the_token(
    hcp: tuple[HcpAppliance, str], start_gateway: GatewayStarter
) -> None:
    _, url = hcp
    gateway = await start(start_gateway, url)
    tokens = await get_tokens(gateway, REALM_USER)
    record = await stored(gateway, token_fingerprint(tokens["access_token"]))
    assert record is not None and record.expires_at - record.issued_at == 7200


async def test_a_five_hour_hcp_is_remembered_five_hours(start_gateway: GatewayStarter) -> None:
    # The sources disagree (2 h or 5 h): labgate follows whatever expires_in the system says.
    mock = HcpAppliance(expires_in=18000)
    async with app_on_loopback(mock.app()) as url:
        gateway = await start(start_gateway, url)
        tokens = await get_tokens(gateway, LOCAL_ADMIN)
        record = await stored(gateway, token_fingerprint(tokens["access_token"]))
        assert record is not None and record.expires_at - record.issued_at == 18000


async def test_a_realm_no_rule_lets_through_is_refused_before_hcp(
    hcp: tuple[HcpAppliance, str], start_gateway: GatewayStarter
) -> None:
    mock, url = hcp
    gateway = await start(start_gateway, url)
    status, body = await token_call(gateway, {**REALM_USER, "realm": "financeUsers"})
    assert (status, body["reason"], body["error"]) == (400, "grant_not_allowed", "unsupported_grant_type")
    assert "password1" not in json.dumps(body)
    assert mock.received == []


async def test_wrong_credentials_pass_through_as_hcp_said(hcp: tuple[HcpAppliance, str], start_gateway: GatewayStarter) -> None:
    _, url = hcp
    gateway = await start(start_gateway, url)
    status, body = await token_call(gateway, {**REALM_USER, "password": "wrong"})
    assert (status, body) == (400, {"error": "invalid_grant", "error_description": "Bad credentials"})


async def test_a_refresh_grant_keeps_the_type_subject_and_client(
    hcp: tuple[HcpAppliance, str], start_gateway: GatewayStarter
) -> None:
    mock, url = hcp
    gateway = await start(start_gateway, url)
    first = await get_tokens(gateway, REALM_USER)
    refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "client_id": "my-client", "client_secret": "my-secret"}
    second = await get_tokens(gateway, refresh)
    assert second["access_token"] != first["access_token"] and second["refresh_token"] != first["refresh_token"]
    record = await stored(gateway, token_fingerprint(second["access_token"]))
    assert record is not None
    assert (record.token_type, record.subject, record.client_id) == ("password", "user1", "my-client")
    assert await stored(gateway, REFRESH_KEY_PREFIX + token_fingerprint(second["refresh_token"])) is not None
    status, _ = await call(gateway, "POST", "/mapi/v1/user/list", second["access_token"], {})
    assert status == 200
    # HCP rotates refresh tokens: the used one is refused by HCP, and labgate passes that on.
    status, body = await token_call(gateway, refresh)
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_a_refresh_token_labgate_never_saw_issued_is_refused_before_hcp(
    hcp: tuple[HcpAppliance, str], start_gateway: GatewayStarter
) -> None:
    mock, url = hcp
    gateway = await start(start_gateway, url)
    async with aiohttp.ClientSession() as client:  # around labgate, straight to HCP
        async with client.post(f"{url}/auth/oauth/", data=REALM_USER) as response:
            direct = await response.json()
    mock.received.clear()
    refresh = {"grant_type": "refresh_token", "refresh_token": direct["refresh_token"], "client_id": "my-client", "client_secret": "my-secret"}
    status, body = await token_call(gateway, refresh)
    assert (status, body["reason"]) == (400, "grant_not_allowed")
    assert mock.received == []


async def test_a_token_labgate_never_saw_issued_is_401_unknown_token(
    hcp: tuple[HcpAppliance, str], start_gateway: GatewayStarter
) -> None:
    mock, url = hcp
    gateway = await start(start_gateway, url)
    async with aiohttp.ClientSession() as client:
        async with client.post(f"{url}/auth/oauth/", data=LOCAL_ADMIN) as response:
            direct = await response.json()
    seen = await get_tokens(gateway, LOCAL_ADMIN)
    mock.received.clear()
    # Issued around labgate; made up; and a refresh token presented as an access token.
    for token in (direct["access_token"], "eyJhbGciOiJIUzI1NiJ9.e30.c2ln", seen["refresh_token"]):
        status, body = await call(gateway, "POST", "/mapi/v1/user/list", token, {})
        assert (status, body["reason"], body["error"]) == (401, "unknown_token", "invalid_token")
        assert token not in json.dumps(body)
    assert mock.received == []


@pytest.mark.parametrize(
    "method, path, reason",
    [
        ("GET", "/mapi/v1/user/list", "method_not_allowed"),
        ("DELETE", "/mapi/v1/bucket/delete", "method_not_allowed"),
        ("POST", "/mapi/v1/user", "route_not_allowed"),
        ("POST", "/mapi/v1/user/list/all", "route_not_allowed"),
        ("POST", "/mapi/v2/user/list", "route_not_allowed"),
        ("GET", "/auth/oauth", "route_not_allowed"),
        ("GET", "/internal/status", "route_not_allowed"),
    ],
    ids=["get-on-mapi", "delete-on-mapi", "area-alone", "three-segments", "other-version", "token-endpoint-get", "elsewhere"],
)
async def test_a_request_outside_the_pack_is_403_and_never_reaches_hcp(
    hcp: tuple[HcpAppliance, str], start_gateway: GatewayStarter, method: str, path: str, reason: str
) -> None:
    mock, url = hcp
    gateway = await start(start_gateway, url)
    token = (await get_tokens(gateway, LOCAL_ADMIN))["access_token"]
    mock.received.clear()
    status, body = await call(gateway, method, path, token)
    assert (status, body["reason"], body["error"]) == (403, reason, "insufficient_scope")
    assert mock.received == []


async def test_revoking_a_users_tokens_at_hcp_is_enforced_by_hcp(
    hcp: tuple[HcpAppliance, str], start_gateway: GatewayStarter
) -> None:
    # labgate learns issues, not HCP's own revocations: the revoked token still passes
    # labgate's checks, and HCP's 401 reaches the client as HCP sent it.
    mock, url = hcp
    gateway = await start(start_gateway, url)
    user = (await get_tokens(gateway, REALM_USER))["access_token"]
    admin = (await get_tokens(gateway, LOCAL_ADMIN))["access_token"]
    status, _ = await call(gateway, "POST", "/mapi/v1/user/revoke_tokens", admin, {"id": mock.user("user1", "marketingUsers").id})
    assert status == 200
    status, body = await call(gateway, "POST", "/mapi/v1/user/list", user, {})
    assert (status, body["error"]) == (401, "invalid_token")
    status, _ = await call(gateway, "POST", "/mapi/v1/user/list", admin, {})
    assert status == 200
