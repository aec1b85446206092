"""Commvault's own Python SDK (cvpysdk) against the mock Commvault, over a real loopback socket.

cvpysdk is synchronous (requests), so each SDK session runs in a worker
thread while the mock serves on the test's event loop.  The SDK probes
``GET <base>/`` without a token, asks ``POST /WhoAmI`` whose token it holds
(sent as ``Authtoken: Bearer <token>``), then lists clients (and hidden,
virtualization and access-node clients), client groups, plans and media
agents; a call outside a token's scope surfaces as the SDK's own error with
Commvault's error body in it.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import aiohttp
import pytest
from cvpysdk.commcell import Commcell
from cvpysdk.exception import SDKException
from cvpysdk.security.user import User

from proxy.mocks.commvault import CommvaultAppliance
from proxy.mocks.commvault_tokens import ALL, CUSTOM
from tests.conftest import app_on_loopback

BASE = "/commandcenter/api"


@pytest.fixture
async def commvault() -> AsyncIterator[tuple[CommvaultAppliance, str]]:
    mock = CommvaultAppliance()
    async with app_on_loopback(mock.app()) as url:
        yield mock, url


async def access_token(url: str, **request: Any) -> str:
    """A service-account access token, created as Command Center does: logged in, POST /V4/AccessToken."""
    return str((await token_info(url, **request))["accessToken"])


async def token_info(url: str, **request: Any) -> dict[str, Any]:
    """The new token's ``tokenInfo``, its access and refresh tokens included."""
    async with aiohttp.ClientSession() as client:
        login = {"username": "svc-backup", "password": base64.b64encode(b"svc-pw").decode()}
        async with client.post(f"{url}{BASE}/Login", json=login) as response:
            session = (await response.json())["token"]
        async with client.post(f"{url}{BASE}/V4/AccessToken", json={"tokenName": "sdk", **request},
                               headers={"Authtoken": session}) as response:
            created = await response.json()
    assert created["error"] == {"errorCode": 0}
    return dict(created["tokenInfo"])


def connect(url: str, token: str) -> Commcell:
    """What a user of the SDK writes: the web service URL and an access token (no username, no password)."""
    host = url.removeprefix("http://")
    return Commcell(host, authtoken=f"Bearer {token}", web_service_url=f"{url}{BASE}", verify_ssl=False)


def list_everything(url: str, token: str) -> dict[str, Any]:
    commcell = connect(url, token)
    return {
        "user": commcell.commcell_username,
        "clients": sorted(commcell.clients.all_clients),
        "hidden": sorted(commcell.clients.hidden_clients),
        "client_groups": commcell.client_groups.all_clientgroups,
        "plans": commcell.plans.all_plans,
        "media_agents": commcell.media_agents.all_media_agents,
    }


async def test_the_sdk_connects_with_an_access_token_and_lists_what_it_manages(commvault: tuple[CommvaultAppliance, str]) -> None:
    mock, url = commvault
    token = await access_token(url, tokenType=ALL)
    listed = await asyncio.to_thread(list_everything, url, token)
    assert listed == {
        "user": "svc-backup",
        "clients": ["client01", "client02", "client03"],
        "hidden": ["vm-hidden"],
        "client_groups": {"laptop clients": "1", "servers": "2"},
        "plans": {"server plan": "1", "laptop plan": "2"},
        "media_agents": {"ma01": {"id": "2", "os_info": "Linux", "is_online": True}},
    }
    sdk_calls = [(m, p) for m, p in mock.received if not p.endswith(("/Login", "/V4/AccessToken"))]
    assert sdk_calls[:2] == [("GET", f"{BASE}/"), ("POST", f"{BASE}/WhoAmI")]
    assert {p.removeprefix(BASE) for _, p in sdk_calls} >= {
        "/Client", "/Client?hiddenclients=true", "/Client?PseudoClientType=VSPseudo",
        "/VSAClientAndClientGroupList", "/ClientGroup", "/V2/Plan", "/V2/MediaAgents",
    }


def plans_of(url: str, token: str) -> Any:
    return connect(url, token).plans.all_plans


async def test_a_custom_token_lists_only_what_its_endpoints_open(commvault: tuple[CommvaultAppliance, str]) -> None:
    _, url = commvault
    token = await access_token(url, tokenType=CUSTOM, apiEndpoints=["/WhoAmI", "/plans"])
    assert await asyncio.to_thread(plans_of, url, token) == {"server plan": "1", "laptop plan": "2"}
    with pytest.raises(SDKException) as refused:
        await asyncio.to_thread(lambda: connect(url, token).client_groups)
    assert "This access token's scope does not include this API" in str(refused.value)
    assert '"errorCode": 403' in str(refused.value)


async def test_an_unknown_token_does_not_connect(commvault: tuple[CommvaultAppliance, str]) -> None:
    _, url = commvault
    with pytest.raises(SDKException):
        await asyncio.to_thread(connect, url, "not-a-token")


async def test_the_probe_needs_no_token_and_the_rest_does(commvault: tuple[CommvaultAppliance, str]) -> None:
    _, url = commvault
    async with aiohttp.ClientSession() as client:
        async with client.get(f"{url}{BASE}/") as response:
            assert response.status == 200
        async with client.post(f"{url}{BASE}/WhoAmI") as response:
            assert (response.status, (await response.json())["errorCode"]) == (401, 401)


def renew_with_the_sdk(url: str, token: str, refresh: str) -> Any:
    """cvpysdk's ``User.renew_access_token``: it posts to ``<base>//V4/AccessToken/Renew`` (its URL template's '//')."""
    commcell = connect(url, token)
    return User.renew_access_token(SimpleNamespace(_commcell_object=commcell), token, refresh)  # type: ignore[arg-type]


async def test_the_sdk_renews_its_token_and_the_appliance_reads_its_double_slash_as_one(
    commvault: tuple[CommvaultAppliance, str],
) -> None:
    mock, url = commvault
    info = await token_info(url, tokenType=ALL)
    renewed = await asyncio.to_thread(renew_with_the_sdk, url, info["accessToken"], info["refreshToken"])
    assert renewed["tokenInfo"]["accessToken"] != info["accessToken"]
    assert ("POST", f"{BASE}//V4/AccessToken/Renew") in mock.received
    assert await asyncio.to_thread(plans_of, url, renewed["tokenInfo"]["accessToken"]) == {"server plan": "1", "laptop plan": "2"}
