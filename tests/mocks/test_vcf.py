"""The mock VCF Operations suite-api over real HTTP: OpsToken sessions, emergency clients, resources and alerts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from proxy.mocks.vcf import Principal, VcfOperationsAppliance
from tests.clock import Clock
from tests.conftest import app_on_loopback

API = "/suite-api/api"
CLIENTS = f"{API}/fleet-management/iam/ssorealms/vcf-sso/emergency-clients"
NEW_CLIENT = {"clientId": "emergency-client-id", "clientName": "Emergency Access Client",
              "clientDescription": "API client for emergency access purposes", "accessTokenTtl": 60}


@pytest.fixture
def clock() -> Clock:
    return Clock(1_800_000_000.0)


@pytest.fixture
async def vcf(clock: Clock) -> AsyncIterator[tuple[VcfOperationsAppliance, str]]:
    mock = VcfOperationsAppliance(clock=clock)
    async with app_on_loopback(mock.app()) as url:
        yield mock, url


async def request(url: str, method: str, path: str, authorization: str | None = None, body: Any = None) -> tuple[int, Any]:
    headers = {"Authorization": authorization} if authorization else {}
    async with aiohttp.ClientSession() as client:
        async with client.request(method, f"{url}{path}", json=body, headers=headers) as response:
            text = await response.text()
            return response.status, (await response.json(content_type=None)) if text else None


async def ops_token(url: str, username: str = "admin", password: str = "admin-pw") -> str:
    status, body = await request(url, "POST", f"{API}/auth/token/acquire", body={"username": username, "password": password})
    assert status == 200, body
    return f"OpsToken {body['token']}"


async def create_client(url: str, admin: str, **changes: Any) -> dict[str, Any]:
    status, body = await request(url, "POST", CLIENTS, admin, {**NEW_CLIENT, **changes})
    assert status == 201, body
    return dict(body)


async def test_acquire_answers_a_token_valid_six_hours(vcf: tuple[VcfOperationsAppliance, str], clock: Clock) -> None:
    _, url = vcf
    status, body = await request(url, "POST", f"{API}/auth/token/acquire", body={"username": "admin", "password": "admin-pw", "authSource": "local"})
    assert status == 200 and set(body) == {"token", "validity", "expiresAt", "roles"}
    assert body["validity"] == int((clock.now + 6 * 3600) * 1000) and body["roles"] == []
    assert body["expiresAt"].endswith("UTC")


@pytest.mark.parametrize(
    "body, status",
    [
        ({"username": "admin", "password": "wrong"}, 401),
        ({"username": "nobody", "password": "admin-pw"}, 401),
        ({"username": "admin", "password": "admin-pw", "authSource": "vIDMAuthSource"}, 401),
        ({"username": "admin"}, 400),
        (["admin", "admin-pw"], 400),
    ],
    ids=["wrong-password", "unknown-user", "other-auth-source", "no-password", "not-an-object"],
)
async def test_acquire_errors(vcf: tuple[VcfOperationsAppliance, str], body: Any, status: int) -> None:
    _, url = vcf
    got, answer = await request(url, "POST", f"{API}/auth/token/acquire", body=body)
    assert (got, answer["httpStatusCode"]) == (status, status) and set(answer) == {"message", "httpStatusCode", "apiErrorCode"}


async def test_an_ops_token_slides_six_hours_and_can_be_released(vcf: tuple[VcfOperationsAppliance, str], clock: Clock) -> None:
    _, url = vcf
    token = await ops_token(url)
    clock.now += 5 * 3600
    assert (await request(url, "GET", f"{API}/resources", token))[0] == 200  # used: six more hours
    clock.now += 5 * 3600
    assert (await request(url, "GET", f"{API}/resources", token))[0] == 200
    clock.now += 6 * 3600
    assert (await request(url, "GET", f"{API}/resources", token))[0] == 401
    other = await ops_token(url)
    assert (await request(url, "POST", f"{API}/auth/token/release", other))[0] == 200
    assert (await request(url, "GET", f"{API}/resources", other))[0] == 401
    assert (await request(url, "POST", f"{API}/auth/token/release", other))[0] == 401


async def test_every_call_needs_a_credential(vcf: tuple[VcfOperationsAppliance, str]) -> None:
    _, url = vcf
    for path in (f"{API}/resources", f"{API}/alerts", f"{API}/versions/current", CLIENTS):
        for authorization in (None, "OpsToken made-up", "Bearer made-up", "Basic YWRtaW46YWRtaW4tcHc="):
            status, body = await request(url, "GET", path, authorization)
            assert (status, body["httpStatusCode"]) == (401, 401), (path, authorization)


async def test_resources_and_alerts_are_paged_in_the_suite_api_shape(vcf: tuple[VcfOperationsAppliance, str]) -> None:
    _, url = vcf
    token = await ops_token(url)
    status, body = await request(url, "GET", f"{API}/resources?page=1&pageSize=2", token)
    assert status == 200 and body["pageInfo"] == {"totalCount": 3, "page": 1, "pageSize": 2}
    assert len(body["resourceList"]) == 1 and body["links"][0]["rel"] == "SELF"
    resource = body["resourceList"][0]
    assert {"identifier", "resourceKey", "resourceHealth", "resourceStatusStates"} <= set(resource)
    assert (await request(url, "GET", f"{API}/resources/{resource['identifier']}", token))[1] == resource
    status, body = await request(url, "GET", f"{API}/alerts", token)
    assert status == 200 and body["pageInfo"]["totalCount"] == 2
    alert = body["alerts"][0]
    assert {"alertId", "resourceId", "alertLevel", "status", "alertDefinitionName"} <= set(alert)
    assert (await request(url, "GET", f"{API}/alerts/{alert['alertId']}", token))[1] == alert
    assert (await request(url, "GET", f"{API}/alerts/nosuch", token))[0] == 404
    assert (await request(url, "GET", f"{API}/resources?pageSize=0", token))[0] == 400
    assert (await request(url, "GET", f"{API}/versions/current", token))[1]["major"] == 9


async def test_creating_an_emergency_client_shows_its_token_once(vcf: tuple[VcfOperationsAppliance, str], clock: Clock) -> None:
    _, url = vcf
    admin = await ops_token(url)
    created = await create_client(url, admin)
    assert created["accessToken"].startswith("eyJhbGciOiJIUz")
    assert created["accessTokenExpirationDate"] == int((clock.now + 60 * 60) * 1000)
    assert (created["accessTokenStatus"], created["accessTokenTtl"]) == ("ACTIVE", 60)
    assert created["tokenEndpointUrl"] == "https://vidb.lab.local/acs/t/CUSTOMER/token"
    assert created["oidcIssuerUrl"] == "https://vidb.lab.local/acs/t/CUSTOMER"
    status, record = await request(url, "GET", f"{CLIENTS}/emergency-client-id", admin)
    assert status == 200 and "accessToken" not in record
    assert record == {k: v for k, v in created.items() if k != "accessToken"}
    status, listed = await request(url, "GET", CLIENTS, admin)
    assert listed == {"emergencyClients": [record]}


async def test_an_emergency_token_reads_as_a_bearer_until_it_expires(vcf: tuple[VcfOperationsAppliance, str], clock: Clock) -> None:
    _, url = vcf
    admin = await ops_token(url)
    bearer = "Bearer " + (await create_client(url, admin))["accessToken"]
    assert (await request(url, "GET", f"{API}/resources", bearer))[0] == 200
    assert (await request(url, "GET", CLIENTS, bearer))[0] == 200
    # An emergency client cannot administer emergency clients.
    status, body = await request(url, "POST", CLIENTS, bearer, {**NEW_CLIENT, "clientId": "second"})
    assert (status, body["httpStatusCode"]) == (403, 403)
    clock.now += 3600
    assert (await request(url, "GET", f"{API}/resources", bearer))[0] == 401
    status, record = await request(url, "GET", f"{CLIENTS}/emergency-client-id", admin)
    assert record["accessTokenStatus"] == "EXPIRED"


async def test_regenerating_or_deleting_kills_the_old_token(vcf: tuple[VcfOperationsAppliance, str]) -> None:
    _, url = vcf
    admin = await ops_token(url)
    old = "Bearer " + (await create_client(url, admin))["accessToken"]
    status, regenerated = await request(url, "POST", f"{CLIENTS}/emergency-client-id/regenerate", admin)
    assert status == 200 and f"Bearer {regenerated['accessToken']}" != old
    assert (await request(url, "GET", f"{API}/resources", old))[0] == 401
    new = f"Bearer {regenerated['accessToken']}"
    assert (await request(url, "GET", f"{API}/resources", new))[0] == 200
    assert (await request(url, "DELETE", f"{CLIENTS}/emergency-client-id", admin)) == (204, None)
    assert (await request(url, "GET", f"{API}/resources", new))[0] == 401
    for method, path in (("GET", "/emergency-client-id"), ("DELETE", "/emergency-client-id"), ("POST", "/emergency-client-id/regenerate")):
        assert (await request(url, method, CLIENTS + path, admin))[0] == 404


@pytest.mark.parametrize(
    "change",
    [{"clientId": ""}, {"clientId": None}, {"clientName": ""}, {"accessTokenTtl": 0}, {"accessTokenTtl": "60"},
     {"accessTokenTtl": True}, {"accessTokenTtl": 2**31}, {"clientDescription": 7}, {"roles": ["admin"]}],
    ids=["empty-id", "no-id", "empty-name", "zero-ttl", "string-ttl", "bool-ttl", "ttl-beyond-int32", "description-not-text", "roles-not-objects"],
)
async def test_an_invalid_emergency_client_is_400(vcf: tuple[VcfOperationsAppliance, str], change: dict[str, Any]) -> None:
    mock, url = vcf
    body = {k: v for k, v in {**NEW_CLIENT, **change}.items() if v is not None}
    status, answer = await request(url, "POST", CLIENTS, await ops_token(url), body)
    assert (status, answer["httpStatusCode"]) == (400, 400)
    assert mock.emergency_clients == {}


async def test_duplicates_unknown_realms_and_unprivileged_users_are_refused(vcf: tuple[VcfOperationsAppliance, str]) -> None:
    _, url = vcf
    admin, viewer = await ops_token(url), await ops_token(url, "viewer", "viewer-pw")
    await create_client(url, admin, roles=[{"roleName": "vcf-viewer"}])
    assert (await request(url, "POST", CLIENTS, admin, NEW_CLIENT))[0] == 409
    other_realm = CLIENTS.replace("vcf-sso", "nosuch")
    assert (await request(url, "GET", other_realm, admin))[0] == 404
    assert (await request(url, "POST", CLIENTS, viewer, {**NEW_CLIENT, "clientId": "x"}))[0] == 403
    assert (await request(url, "DELETE", f"{CLIENTS}/emergency-client-id", viewer))[0] == 403
    assert (await request(url, "POST", f"{CLIENTS}/emergency-client-id/regenerate", viewer))[0] == 403
    status, record = await request(url, "GET", f"{CLIENTS}/emergency-client-id", viewer)
    assert status == 200 and record["roles"] == [{"roleName": "vcf-viewer"}]


async def test_the_bearer_validator_is_pluggable() -> None:
    seen: list[str] = []

    async def issuer_says(token: str) -> Principal | None:
        seen.append(token)
        return Principal("ops-admin", admin=True) if token == "issued-by-labgate" else None

    mock = VcfOperationsAppliance(bearer_validator=issuer_says)
    async with app_on_loopback(mock.app()) as url:
        assert (await request(url, "POST", CLIENTS, "Bearer issued-by-labgate", NEW_CLIENT))[0] == 201
        assert (await request(url, "GET", f"{API}/resources", "Bearer other"))[0] == 401
    assert seen == ["issued-by-labgate", "other"]
