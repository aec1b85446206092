"""The mock GreenLake over real HTTP: client-credentials JWTs, its JWKS, rotation, resets and the servers API."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import jwt
import pytest

from proxy.mocks.greenlake import JWKS_PATH, ApiCredential, GreenLakeAppliance
from tests.clock import Clock
from tests.conftest import app_on_loopback

SERVERS = "/compute-ops-mgmt/v1/servers"
ERROR_FIELDS = {"httpStatusCode", "errorCode", "message", "debugId", "errorDetails"}


@pytest.fixture
def clock() -> Clock:
    return Clock(1_800_000_000.0)


@pytest.fixture
async def greenlake(clock: Clock) -> AsyncIterator[tuple[GreenLakeAppliance, str]]:
    mock = GreenLakeAppliance(clock=clock)
    async with app_on_loopback(mock.app()) as url:
        yield mock, url


def form_of(credential: ApiCredential) -> dict[str, str]:
    return {"grant_type": "client_credentials", "client_id": credential.client_id, "client_secret": credential.client_secret}


async def token_call(url: str, form: dict[str, str], **headers: str) -> tuple[int, Any, dict[str, str]]:
    async with aiohttp.ClientSession() as client:
        async with client.post(f"{url}/as/token.oauth2", data=form, headers=headers) as response:
            return response.status, await response.json(content_type=None), dict(response.headers)


async def token(url: str, credential: ApiCredential) -> str:
    status, body, _ = await token_call(url, form_of(credential))
    assert status == 200, body
    return str(body["access_token"])


async def get(url: str, path: str, token: str | None = None) -> tuple[int, Any]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{url}{path}", headers=headers) as response:
            return response.status, await response.json(content_type=None)


async def keys(url: str) -> dict[str, Any]:
    return dict((await get(url, JWKS_PATH))[1])


async def test_client_credentials_answer_an_rs256_jwt_with_the_documented_claims(
    greenlake: tuple[GreenLakeAppliance, str], clock: Clock
) -> None:
    mock, url = greenlake
    credential = mock.create_client("ops@lab.example")
    status, body, headers = await token_call(url, form_of(credential))
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert set(body) == {"access_token", "token_type", "expires_in"}
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 7199)
    header = jwt.get_unverified_header(body["access_token"])
    assert (header["alg"], header["kid"]) == ("RS256", mock.kid)
    jwk = next(k for k in (await keys(url))["keys"] if k["kid"] == header["kid"])
    claims = jwt.decode(body["access_token"], jwt.PyJWK(jwk).key, algorithms=["RS256"], audience="external_api",
                        options={"verify_exp": False, "verify_iat": False})
    assert set(claims) == {"client_id", "iss", "aud", "sub", "user_ctx", "auth_source", "platform_customer_id",
                           "application_instance_id", "iat", "exp"}
    assert (claims["client_id"], claims["iss"], claims["sub"]) == (credential.client_id, "https://sso.common.cloud.hpe.com", "ops@lab.example")
    assert (claims["iat"], claims["exp"]) == (int(clock.now), int(clock.now) + 7200)


async def test_http_basic_client_authentication_works_too(greenlake: tuple[GreenLakeAppliance, str]) -> None:
    mock, url = greenlake
    credential = mock.create_client()
    basic = base64.b64encode(f"{credential.client_id}:{credential.client_secret}".encode()).decode()
    status, body, _ = await token_call(url, {"grant_type": "client_credentials"}, Authorization=f"Basic {basic}")
    assert status == 200 and jwt.decode(body["access_token"], options={"verify_signature": False})["client_id"] == credential.client_id


@pytest.mark.parametrize(
    "change, status, error",
    [
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"client_id": "00000000-0000-0000-0000-000000000000"}, 401, "invalid_client"),
        ({"client_secret": None}, 401, "invalid_client"),
        ({"grant_type": None}, 400, "invalid_request"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type"),
        ({"grant_type": "refresh_token"}, 400, "unsupported_grant_type"),
    ],
    ids=["wrong-secret", "unknown-client", "no-secret", "no-grant", "password-grant", "refresh-grant"],
)
async def test_token_endpoint_errors_are_oauth2_bodies(
    greenlake: tuple[GreenLakeAppliance, str], change: dict[str, str | None], status: int, error: str
) -> None:
    mock, url = greenlake
    form = {k: v for k, v in {**form_of(mock.create_client()), **change}.items() if v is not None}
    got_status, body, _ = await token_call(url, form)
    assert (got_status, body["error"]) == (status, error) and set(body) == {"error", "error_description"}


async def test_two_client_authentication_methods_or_a_json_body_are_invalid(greenlake: tuple[GreenLakeAppliance, str]) -> None:
    mock, url = greenlake
    credential = mock.create_client()
    basic = base64.b64encode(f"{credential.client_id}:{credential.client_secret}".encode()).decode()
    status, body, _ = await token_call(url, form_of(credential), Authorization=f"Basic {basic}")
    assert (status, body["error"]) == (400, "invalid_request")
    status, body, headers = await token_call(url, {"grant_type": "client_credentials"}, Authorization="Basic !!!")
    assert (status, body["error"]) == (401, "invalid_client") and headers["WWW-Authenticate"].startswith("Basic")
    async with aiohttp.ClientSession() as client:
        async with client.post(f"{url}/as/token.oauth2", json=form_of(credential)) as response:
            assert response.status == 400


async def test_discovery_names_the_token_endpoint_and_the_jwks(greenlake: tuple[GreenLakeAppliance, str]) -> None:
    _, url = greenlake
    status, body = await get(url, "/.well-known/openid-configuration")
    assert status == 200
    assert (body["jwks_uri"], body["token_endpoint"]) == (f"{url}{JWKS_PATH}", f"{url}/as/token.oauth2")


async def test_rotation_signs_with_a_new_kid_and_drops_or_keeps_the_old_key(greenlake: tuple[GreenLakeAppliance, str]) -> None:
    mock, url = greenlake
    credential = mock.create_client()
    old_kid, old_token = mock.kid, await token(url, credential)
    new_kid = mock.rotate_key()
    assert new_kid != old_kid and [k["kid"] for k in (await keys(url))["keys"]] == [new_kid]
    assert jwt.get_unverified_header(await token(url, credential))["kid"] == new_kid
    status, body = await get(url, SERVERS, old_token)  # its key is gone
    assert (status, body["errorCode"]) == (401, "HPE_GL_ERROR_UNAUTHORIZED")
    kept_kid = mock.rotate_key(keep_old=True)
    assert [k["kid"] for k in (await keys(url))["keys"]] == [new_kid, kept_kid]
    for published in (await keys(url))["keys"]:
        assert (published["kty"], published["alg"], published["use"]) == ("RSA", "RS256", "sig") and "d" not in published


async def test_keeping_old_keys_can_be_the_default() -> None:
    mock = GreenLakeAppliance(keep_old_keys=True)
    first = mock.kid
    mock.rotate_key()
    assert [k.kid for k in mock.keys][0] == first and len(mock.keys) == 2


async def test_resetting_a_secret_kills_its_tokens_and_the_old_secret(greenlake: tuple[GreenLakeAppliance, str]) -> None:
    mock, url = greenlake
    credential, bystander = mock.create_client(), mock.create_client()
    access, other = await token(url, credential), await token(url, bystander)
    assert (await get(url, SERVERS, access))[0] == 200
    new = mock.reset_secret(credential.client_id)
    assert new.client_secret != credential.client_secret
    status, body = await get(url, SERVERS, access)
    assert (status, body["message"]) == (401, "Access token revoked")
    assert (await token_call(url, form_of(credential)))[0] == 401
    assert (await get(url, SERVERS, await token(url, new)))[0] == 200
    assert (await get(url, SERVERS, other))[0] == 200


async def test_deleting_a_credential_or_its_user_kills_its_tokens(greenlake: tuple[GreenLakeAppliance, str]) -> None:
    mock, url = greenlake
    deleted, owned, kept = mock.create_client("a@lab.example"), mock.create_client("b@lab.example"), mock.create_client("c@lab.example")
    tokens = [await token(url, c) for c in (deleted, owned, kept)]
    mock.delete_client(deleted.client_id)
    mock.delete_user("b@lab.example")
    assert [(await get(url, SERVERS, t))[0] for t in tokens] == [401, 401, 200]
    assert (await token_call(url, form_of(owned)))[0] == 401


async def test_the_api_refuses_missing_made_up_and_expired_tokens(greenlake: tuple[GreenLakeAppliance, str], clock: Clock) -> None:
    mock, url = greenlake
    access = await token(url, mock.create_client())
    for bad in (None, "not-a-jwt", access + "x"):
        status, body = await get(url, SERVERS, bad)
        assert status == 401 and set(body) == ERROR_FIELDS and body["httpStatusCode"] == 401
    clock.now += 7200
    status, body = await get(url, SERVERS, access)
    assert (status, body["message"]) == (401, "Access token expired")


async def test_servers_have_the_documented_shape(greenlake: tuple[GreenLakeAppliance, str]) -> None:
    mock, url = greenlake
    status, body = await get(url, SERVERS, await token(url, mock.create_client()))
    assert status == 200 and (body["offset"], body["count"], body["total"]) == (0, 3, 3)
    server = body["items"][0]
    assert {"id", "type", "name", "resourceUri", "generation", "createdAt", "updatedAt", "hardware", "state"} <= set(server)
    assert {"managed", "connected", "subscriptionState"} <= set(server["state"])
    assert (server["type"], server["resourceUri"]) == ("compute-ops-mgmt/server", f"{SERVERS}/{server['id']}")


async def test_servers_page_filter_and_select(greenlake: tuple[GreenLakeAppliance, str]) -> None:
    mock, url = greenlake
    access = await token(url, mock.create_client())
    status, body = await get(url, f"{SERVERS}?offset=1&limit=1", access)
    assert (body["offset"], body["count"], body["total"], body["items"][0]["name"]) == (1, 1, 3, "MXQ1140XVY")
    status, body = await get(url, f"{SERVERS}?filter=state/managed eq false", access)
    assert [i["name"] for i in body["items"]] == ["CZ2D1C0L8K"] and body["total"] == 1
    status, body = await get(url, f"{SERVERS}?filter=contains(name,'MXQ') and hardware/powerState eq 'ON'&select=name,id", access)
    assert body["items"] == [{"id": "P07595-B21+MXQ1140XVX", "name": "MXQ1140XVX"}, {"id": "P07595-B21+MXQ1140XVY", "name": "MXQ1140XVY"}]


@pytest.mark.parametrize(
    "query, subject",
    [("limit=0", "limit"), ("limit=1001", "limit"), ("limit=ten", "limit"), ("offset=-1", "offset"),
     ("filter=name like 'x'", "filter"), ("filter=nosuch eq 1", "filter"), ("select=name,nosuch", "select")],
)
async def test_bad_query_parameters_are_400_with_the_greenlake_error_body(
    greenlake: tuple[GreenLakeAppliance, str], query: str, subject: str
) -> None:
    mock, url = greenlake
    status, body = await get(url, f"{SERVERS}?{query}", await token(url, mock.create_client()))
    assert status == 400 and set(body) == ERROR_FIELDS
    assert (body["httpStatusCode"], body["errorCode"]) == (400, "HPE_GL_ERROR_BAD_REQUEST")
    assert body["errorDetails"][0]["issues"][0]["subject"] == subject


async def test_one_server_and_the_older_prefix(greenlake: tuple[GreenLakeAppliance, str]) -> None:
    mock, url = greenlake
    access = await token(url, mock.create_client())
    status, body = await get(url, f"{SERVERS}/P07595-B21+MXQ1140XVX", access)
    assert status == 200 and body["name"] == "MXQ1140XVX"
    status, body = await get(url, f"{SERVERS}/nosuch", access)
    assert (status, body["errorCode"]) == (404, "HPE_GL_ERROR_NOT_FOUND")
    status, body = await get(url, "/compute-ops/v1beta2/servers", access)
    assert status == 200 and body["items"][0]["resourceUri"].startswith("/compute-ops/v1beta2/servers/")


async def test_the_prefixes_are_configurable() -> None:
    mock = GreenLakeAppliance(prefixes=("/compute-ops-mgmt/v1",))
    async with app_on_loopback(mock.app()) as url:
        access = await token(url, mock.create_client())
        assert (await get(url, SERVERS, access))[0] == 200
        async with aiohttp.ClientSession() as client:
            async with client.get(f"{url}/compute-ops/v1beta2/servers", headers={"Authorization": f"Bearer {access}"}) as response:
                assert response.status == 404
