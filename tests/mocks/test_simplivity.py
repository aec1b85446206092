"""The mock SimpliVity over real HTTP: the token endpoint, expiry, and the emergency grant's limits.

HPE's "Requesting authentication by emergency grant": "Using this type of
token, clients can only access the following limited set of API operations:
GET /hosts, GET /omnistack_clusters, GET /backups, GET /datastores, GET
/virtual_machines, POST /backups/{bkpId}/restore. With this grant type, the
REST API does not support sorting and filtering GET requests or querying for
optional properties." And: "Tokens expire either after ten minutes of
inactivity or after 24 hours even with continuous activity."
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from proxy.mocks.simplivity import CLIENT_BASIC, SimplivityAppliance
from tests.clock import Clock
from tests.conftest import app_on_loopback

EMERGENCY = {"grant_type": "emergency", "username": "svtcli", "password": "svtcli-pw"}
PASSWORD = {"grant_type": "password", "username": "administrator@vsphere.local", "password": "vmware1!"}


@pytest.fixture
def clock() -> Clock:
    return Clock(1_800_000_000.0)


@pytest.fixture
async def simplivity(clock: Clock) -> AsyncIterator[tuple[SimplivityAppliance, str]]:
    mock = SimplivityAppliance(clock=clock)
    async with app_on_loopback(mock.app()) as url:
        yield mock, url


async def token(url: str, form: dict[str, str], authorization: str = CLIENT_BASIC) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as client:
        async with client.post(f"{url}/api/oauth/token", data=form, headers={"Authorization": authorization}) as response:
            return response.status, await response.json()


async def call(url: str, method: str, path: str, bearer: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as client:
        async with client.request(method, f"{url}{path}", headers={"Authorization": f"Bearer {bearer}"}) as response:
            return response.status, await response.json(content_type=None)


async def access(url: str, form: dict[str, str]) -> str:
    status, body = await token(url, form)
    assert status == 200, body
    return str(body["access_token"])


async def test_the_token_answer_has_the_documented_shape(simplivity: tuple[SimplivityAppliance, str]) -> None:
    _, url = simplivity
    status, body = await token(url, EMERGENCY)
    assert status == 200 and set(body) == {"access_token", "token_type", "expires_in", "scope", "updated_at"}
    assert (body["token_type"], body["scope"], body["expires_in"]) == ("bearer", "read write", 86400)


@pytest.mark.parametrize(
    "form, authorization, expected",
    [({**EMERGENCY, "password": "wrong"}, CLIENT_BASIC, (400, "invalid_grant", "Invalid credentials")),
     ({**EMERGENCY, "username": "administrator@vsphere.local"}, CLIENT_BASIC, (400, "invalid_grant", "Invalid credentials")),
     ({**EMERGENCY, "grant_type": "client_credentials"}, CLIENT_BASIC, (400, "unsupported_grant_type", None)),
     (EMERGENCY, "Basic b3RoZXI6", (401, "unauthorized", None))],
    ids=["wrong-password", "a-user-is-not-the-emergency-account", "unknown-grant", "not-the-simplivity-client"],
)
async def test_bad_token_requests(simplivity: tuple[SimplivityAppliance, str], form: dict[str, str], authorization: str,
                                  expected: tuple[int, str, str | None]) -> None:
    mock, url = simplivity
    status, body = await token(url, form, authorization)
    assert (status, body["error"]) == expected[:2]
    if expected[2] is not None:
        assert body["error_description"] == expected[2]
    assert mock.tokens == {}


@pytest.mark.parametrize("path", ["/api/hosts", "/api/omnistack_clusters", "/api/backups", "/api/datastores", "/api/virtual_machines"])
async def test_an_emergency_token_lists_the_five_collections_paged(simplivity: tuple[SimplivityAppliance, str], path: str) -> None:
    _, url = simplivity
    bearer = await access(url, EMERGENCY)
    status, body = await call(url, "GET", f"{path}?offset=0&limit=1", bearer)
    assert status == 200 and (body["offset"], body["limit"]) == (0, 1)


async def test_an_emergency_token_restores_a_backup(simplivity: tuple[SimplivityAppliance, str]) -> None:
    _, url = simplivity
    bearer = await access(url, EMERGENCY)
    status, body = await call(url, "POST", "/api/backups/backup-1/restore?restore_original=false", bearer)
    assert status == 202 and body["task"]["state"] == "IN_PROGRESS"


@pytest.mark.parametrize(
    "method, path",
    [("GET", "/api/hosts/42240000-host-0"), ("DELETE", "/api/backups/backup-1"), ("GET", "/api/tasks/any")],
    ids=["one-host", "delete-backup", "poll-a-task"],
)
async def test_an_emergency_token_reaches_nothing_else(simplivity: tuple[SimplivityAppliance, str], method: str, path: str) -> None:
    mock, url = simplivity
    bearer = await access(url, EMERGENCY)
    status, body = await call(url, method, path, bearer)
    assert (status, body["error"], body["message"]) == (403, "Forbidden", "Access is denied")
    assert len(mock.backups) == 3


@pytest.mark.parametrize(
    "query",
    ["sort=name", "order=descending", "case=insensitive", "fields=name", "show_optional_fields=true", "name=omnicube-0",
     "virtual_machine_id=vm-1", "created_after=2026-01-01T00:00:00Z"],
)
async def test_an_emergency_token_cannot_sort_filter_or_ask_for_optional_fields(
    simplivity: tuple[SimplivityAppliance, str], query: str
) -> None:
    _, url = simplivity
    bearer = await access(url, EMERGENCY)
    status, body = await call(url, "GET", f"/api/backups?offset=0&{query}", bearer)
    assert (status, body["error"]) == (400, "Bad Request")
    status, body = await call(url, "POST", f"/api/backups/backup-1/restore?{query}", bearer)
    assert (status, body["error"]) == (400, "Bad Request")


async def test_a_password_token_keeps_the_full_api(simplivity: tuple[SimplivityAppliance, str]) -> None:
    mock, url = simplivity
    bearer = await access(url, PASSWORD)
    assert (await call(url, "GET", "/api/hosts?sort=name&order=descending", bearer))[0] == 200
    assert (await call(url, "GET", "/api/hosts/42240000-host-0", bearer))[0] == 200
    assert (await call(url, "DELETE", "/api/backups/backup-1", bearer))[0] == 200
    assert len(mock.backups) == 2


@pytest.mark.parametrize("form", [EMERGENCY, PASSWORD], ids=["emergency", "password"])
async def test_a_token_dies_after_ten_idle_minutes(simplivity: tuple[SimplivityAppliance, str], clock: Clock, form: dict[str, str]) -> None:
    _, url = simplivity
    bearer = await access(url, form)
    clock.advance(599)
    assert (await call(url, "GET", "/api/hosts", bearer))[0] == 200  # a use 9:59 later keeps it alive
    clock.advance(599)
    assert (await call(url, "GET", "/api/hosts", bearer))[0] == 200
    clock.advance(600)
    status, body = await call(url, "GET", "/api/hosts", bearer)
    assert (status, body["error"], body["message"]) == (401, "invalid_token", f"Access token expired due to inactivity: {bearer}")


async def test_a_token_dies_24_hours_after_issue_even_with_continuous_use(simplivity: tuple[SimplivityAppliance, str], clock: Clock) -> None:
    _, url = simplivity
    bearer = await access(url, EMERGENCY)
    for _ in range(24 * 6 - 1):  # a use every ten minutes less a second, for the whole day
        clock.advance(599)
        assert (await call(url, "GET", "/api/datastores", bearer))[0] == 200
    clock.advance(86400 - (24 * 6 - 1) * 599)
    status, body = await call(url, "GET", "/api/datastores", bearer)
    assert (status, body["message"]) == (401, f"Access token expired: {bearer}")


async def test_an_unknown_or_revoked_token_is_401_unauthorized(simplivity: tuple[SimplivityAppliance, str]) -> None:
    _, url = simplivity
    status, body = await call(url, "GET", "/api/hosts", "not-a-token")
    assert (status, body["error"], body["exception"]) == (401, "Unauthorized", "com.simplivity.restapi.exceptions.UnauthorizedException")
    bearer = await access(url, EMERGENCY)
    assert (await call(url, "GET", "/api/oauth/revoke", bearer))[0] == 200
    assert (await call(url, "GET", "/api/hosts", bearer))[0] == 401


async def test_the_version_needs_no_token(simplivity: tuple[SimplivityAppliance, str]) -> None:
    _, url = simplivity
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{url}/api/version") as response:
            assert response.status == 200 and "REST_API_Version" in await response.json()
