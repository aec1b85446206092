"""The mock HCP for cloud scale over real HTTP: its token endpoint, errors, MAPI shapes and revocation."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest

from proxy.mocks.hcp import HcpAccounts, HcpAppliance
from tests.clock import Clock
from tests.conftest import app_on_loopback

CLIENT = {"client_id": "my-client", "client_secret": "my-secret", "scope": "*"}
REALM_USER = {"grant_type": "password", "username": "user1", "password": "password1", "realm": "marketingUsers", **CLIENT}
LOCAL_ADMIN = {"grant_type": "password", "username": "admin", "password": "admin-pw", **CLIENT}


@pytest.fixture
def clock() -> Clock:
    return Clock(1_800_000_000.0)


@pytest.fixture
async def hcp(clock: Clock) -> AsyncIterator[tuple[HcpAppliance, str]]:
    mock = HcpAppliance(clock=clock)
    async with app_on_loopback(mock.app()) as url:
        yield mock, url


async def post_form(url: str, form: dict[str, str] | bytes, path: str = "/auth/oauth/", **headers: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as client:
        async with client.post(f"{url}{path}", data=form, headers=headers) as response:
            return response.status, await response.json(content_type=None)


async def mapi(url: str, method: str, path: str, token: str | None, body: Any = None) -> tuple[int, Any, dict[str, str]]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as client:
        async with client.request(method, f"{url}{path}", json=body, headers=headers) as response:
            text = await response.text()
            return response.status, (await response.json(content_type=None)) if text else None, dict(response.headers)


async def token(url: str, form: dict[str, str] = REALM_USER) -> dict[str, Any]:
    status, body = await post_form(url, form)
    assert status == 200, body
    return dict(body)


@pytest.mark.parametrize("path", ["/auth/oauth/", "/auth/oauth"])
async def test_the_password_grant_answers_a_jwt_looking_token_for_two_hours_and_a_refresh_token(
    hcp: tuple[HcpAppliance, str], clock: Clock, path: str
) -> None:
    _, url = hcp
    status, body = await post_form(url, REALM_USER, path)
    assert status == 200
    assert set(body) == {"access_token", "token_type", "expires_in", "refresh_token"}
    assert body["access_token"].startswith("eyJ") and body["expires_in"] == 7200
    claims = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert (claims["user_name"], claims["realm"], claims["exp"] - claims["iat"]) == ("user1", "marketingUsers", 7200)


@pytest.mark.parametrize("realm", [None, "Local", "local", "LOCAL"])
async def test_an_omitted_or_local_realm_logs_in_the_local_admin(hcp: tuple[HcpAppliance, str], realm: str | None) -> None:
    _, url = hcp
    form = {**LOCAL_ADMIN, **({"realm": realm} if realm else {})}
    claims = jwt.decode((await token(url, form))["access_token"], options={"verify_signature": False})
    assert (claims["user_name"], claims["realm"]) == ("admin", "Local")


async def test_a_realm_user_is_not_the_local_admin(hcp: tuple[HcpAppliance, str]) -> None:
    _, url = hcp
    status, body = await post_form(url, {**REALM_USER, "realm": "Local"})
    assert (status, body["error"]) == (400, "invalid_grant")


async def test_the_lifetime_is_a_parameter_because_the_sources_disagree(clock: Clock) -> None:
    mock = HcpAppliance(expires_in=18000, clock=clock)
    async with app_on_loopback(mock.app()) as url:
        assert (await token(url))["expires_in"] == 18000


@pytest.mark.parametrize(
    "form, status, error",
    [
        ({**REALM_USER, "password": "wrong"}, 400, "invalid_grant"),
        ({**REALM_USER, "username": "nobody"}, 400, "invalid_grant"),
        ({**REALM_USER, "realm": "financeUsers"}, 400, "invalid_grant"),
        ({k: v for k, v in REALM_USER.items() if k != "grant_type"}, 400, "invalid_request"),
        ({**REALM_USER, "grant_type": "client_credentials"}, 400, "unsupported_grant_type"),
        ({k: v for k, v in REALM_USER.items() if k != "client_secret"}, 400, "invalid_request"),
        ({k: v for k, v in REALM_USER.items() if k != "client_id"}, 400, "invalid_request"),
        ({**REALM_USER, "scope": "read"}, 400, "invalid_scope"),
        ({k: v for k, v in REALM_USER.items() if k != "password"}, 400, "invalid_request"),
        ({"grant_type": "refresh_token", **CLIENT}, 400, "invalid_request"),
        ({"grant_type": "refresh_token", "refresh_token": "made-up", **CLIENT}, 400, "invalid_grant"),
    ],
    ids=["wrong-password", "unknown-user", "unknown-realm", "no-grant", "other-grant", "no-secret", "no-client",
         "other-scope", "no-password", "refresh-without-token", "unknown-refresh-token"],
)
async def test_token_errors_are_oauth2_bodies(hcp: tuple[HcpAppliance, str], form: dict[str, str], status: int, error: str) -> None:
    _, url = hcp
    got_status, body = await post_form(url, form)
    assert (got_status, body["error"]) == (status, error)
    assert set(body) == {"error", "error_description"}


async def test_a_json_token_request_is_invalid(hcp: tuple[HcpAppliance, str]) -> None:
    _, url = hcp
    async with aiohttp.ClientSession() as client:
        async with client.post(f"{url}/auth/oauth/", json=REALM_USER) as response:
            assert response.status == 400 and (await response.json())["error"] == "invalid_request"


async def test_known_clients_are_checked_when_listed() -> None:
    mock = HcpAppliance(HcpAccounts(clients={"my-client": "my-secret"}))
    async with app_on_loopback(mock.app()) as url:
        assert (await post_form(url, REALM_USER))[0] == 200
        status, body = await post_form(url, {**REALM_USER, "client_secret": "other"})
        assert (status, body["error"]) == (401, "invalid_client")


async def test_a_refresh_rotates_the_refresh_token_and_keeps_the_user(hcp: tuple[HcpAppliance, str]) -> None:
    _, url = hcp
    first = await token(url)
    refresh = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], **CLIENT}
    second = await token(url, refresh)
    assert second["refresh_token"] != first["refresh_token"]
    assert jwt.decode(second["access_token"], options={"verify_signature": False})["user_name"] == "user1"
    status, body = await post_form(url, refresh)
    assert (status, body["error"]) == (400, "invalid_grant")  # used once already
    status, body = await post_form(url, {**refresh, "refresh_token": second["refresh_token"], "client_id": "other"})
    assert (status, body["error"]) == (400, "invalid_grant")  # not this client's
    # The access token a refresh came with lives on until it expires.
    assert (await mapi(url, "POST", "/mapi/v1/user/list", first["access_token"], {}))[0] == 200


async def test_every_call_but_the_token_endpoint_needs_a_bearer_token(hcp: tuple[HcpAppliance, str], clock: Clock) -> None:
    _, url = hcp
    access = (await token(url))["access_token"]
    for method, path in (("GET", "/api/admin/setup"), ("POST", "/mapi/v1/user/list"), ("POST", "/mapi/v1/storage_component/list")):
        status, body, headers = await mapi(url, method, path, None)
        assert (status, body["error"]) == (401, "unauthorized")
        status, body, headers = await mapi(url, method, path, "eyJmade.up.token")
        assert (status, body["error"]) == (401, "invalid_token") and headers["WWW-Authenticate"].startswith("Bearer")
        assert (await mapi(url, method, path, access))[0] == 200
    clock.now += 7200
    status, body, _ = await mapi(url, "GET", "/api/admin/setup", access)
    assert (status, body["error"], body["error_description"]) == (401, "invalid_token", "Access token expired")


async def test_setup_lists_the_security_realms(hcp: tuple[HcpAppliance, str]) -> None:
    _, url = hcp
    status, body, _ = await mapi(url, "GET", "/api/admin/setup", (await token(url))["access_token"])
    assert status == 200 and [r["name"] for r in body["realms"]] == ["Local", "marketingUsers"]


async def test_the_mapi_takes_posts_only(hcp: tuple[HcpAppliance, str]) -> None:
    _, url = hcp
    access = (await token(url))["access_token"]
    for method in ("GET", "PUT", "DELETE", "PATCH"):
        status, body, headers = await mapi(url, method, "/mapi/v1/user/list", access)
        assert (status, headers["Allow"], body["statusCode"]) == (405, "POST", 405)
    status, body, _ = await mapi(url, "POST", "/mapi/v1/bucket/frobnicate", access, {})
    assert (status, body["statusCode"]) == (404, 404)


async def test_user_list_pages_and_filters_in_the_json_body(clock: Clock) -> None:
    realms = {"marketingUsers": {f"user{i}": "pw" for i in range(5)}}
    mock = HcpAppliance(HcpAccounts(realms=realms), clock=clock)
    async with app_on_loopback(mock.app()) as url:
        access = (await token(url, LOCAL_ADMIN))["access_token"]
        status, users, _ = await mapi(url, "POST", "/mapi/v1/user/list", access, {})
        assert status == 200 and len(users) == 6
        assert set(users[0]) == {"id", "username", "displayName", "realmName"}
        status, page, _ = await mapi(url, "POST", "/mapi/v1/user/list", access, {"count": 2})
        assert [u["id"] for u in page] == [u["id"] for u in users[:2]]
        status, rest, _ = await mapi(url, "POST", "/mapi/v1/user/list", access, {"count": 1000, "startingFrom": users[2]["id"]})
        assert [u["id"] for u in rest] == [u["id"] for u in users[2:]]
        status, found, _ = await mapi(url, "POST", "/mapi/v1/user/list", access, {"nameFilter": "USER3"})
        assert [u["username"] for u in found] == ["user3"]
        for bad in ({"count": 1001}, {"count": 0}, {"count": "10"}, {"nameFilter": 7}):
            status, body, _ = await mapi(url, "POST", "/mapi/v1/user/list", access, bad)
            assert (status, body["statusCode"]) == (400, 400), bad
        for raw in (b"[1, 2]", b"{not json"):
            async with aiohttp.ClientSession() as client:
                async with client.post(f"{url}/mapi/v1/user/list", data=raw, headers={"Authorization": f"Bearer {access}"}) as response:
                    assert response.status == 400


async def test_storage_component_list_has_the_documented_shape(hcp: tuple[HcpAppliance, str]) -> None:
    _, url = hcp
    status, body, _ = await mapi(url, "POST", "/mapi/v1/storage_component/list", (await token(url))["access_token"], {})
    assert status == 200
    assert set(body[0]) == {"id", "storageType", "storageComponentConfig"}
    assert set(body[0]["storageComponentConfig"]) == {"label", "host", "https", "port", "bucket", "region", "authType", "state"}


async def test_revoke_tokens_ends_every_token_of_one_user(hcp: tuple[HcpAppliance, str]) -> None:
    mock, url = hcp
    user = await token(url)
    admin = (await token(url, LOCAL_ADMIN))["access_token"]
    user_id = mock.user("user1", "marketingUsers").id
    status, body, _ = await mapi(url, "POST", "/mapi/v1/user/revoke_tokens", admin, {"id": user_id})
    assert (status, body) == (200, None)
    assert (await mapi(url, "POST", "/mapi/v1/user/list", user["access_token"], {}))[0] == 401
    refresh = {"grant_type": "refresh_token", "refresh_token": user["refresh_token"], **CLIENT}
    assert (await post_form(url, refresh))[0] == 400
    assert (await mapi(url, "POST", "/mapi/v1/user/list", admin, {}))[0] == 200
    for bad, expected in (({}, 400), ({"id": "00000000-0000-0000-0000-000000000000"}, 404)):
        status, body, _ = await mapi(url, "POST", "/mapi/v1/user/revoke_tokens", admin, bad)
        assert (status, body["statusCode"]) == (expected, expected)


async def test_every_request_is_recorded_before_any_check(hcp: tuple[HcpAppliance, str]) -> None:
    mock, url = hcp
    await mapi(url, "GET", "/mapi/v1/user/list?x=1", None)
    assert mock.received == [("GET", "/mapi/v1/user/list?x=1")]
