"""Commvault's own Python SDK (cvpysdk) through labgate, against the mock Commvault.

The client does what a Commvault user does: hands cvpysdk the web service URL
(labgate's, here) and a service-account access token (one labgate's token
service issued), which the SDK sends as ``Authtoken: Bearer <token>``.  The SDK
probes ``GET <base>/`` without a token (a public route of the commvault pack),
asks ``POST /WhoAmI``, then lists clients, client groups, plans and media
agents.  labgate checks the token and its scope, and reaches the appliance with
its own credential.  cvpysdk is synchronous: it runs in a worker thread while
labgate and the mock serve on the test's loop.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from cvpysdk.commcell import Commcell
from cvpysdk.exception import SDKException
from cvpysdk.security.user import User

from proxy.mocks.commvault import CommvaultAppliance
from tests.conftest import app_on_loopback
from tests.gateway.appliances import noting_authorization
from tests.gateway.token_service import ADMIN, ADMIN_HASH, admin_call
from tests.issuer.shipped import (
    ISSUER,
    Labgate,
    commvault_upstream,
    running_labgate,
    shipped_config,
)

STANDING = "commvault-standing-" + secrets.token_hex(16)
BASE = "/commandcenter/api"
ACCOUNT = "/service-accounts/svc-backup/tokens"


@pytest.fixture
async def lab(tmp_path: Path) -> AsyncIterator[tuple[Labgate, CommvaultAppliance, list[str | None]]]:
    mock = CommvaultAppliance(base_path=BASE)
    mock.add_standing_token(STANDING)
    seen: list[str | None] = []
    (tmp_path / "commvault.token").write_text(STANDING + "\n")
    async with app_on_loopback(noting_authorization(mock.app(), seen)) as url:
        upstream = {**commvault_upstream(url + BASE), "token_header": "authtoken",
                    "credential": {"type": "bearer", "token_file": str(tmp_path / "commvault.token")}}
        issuer = {**ISSUER, "admin": {"username": ADMIN[0], "password_hash": ADMIN_HASH}}
        async with running_labgate(shipped_config(tmp_path, [upstream], issuer=issuer)) as running:
            assert (await admin_call(running.running, "POST", "/subjects", body={"name": "svc-backup"}))[0] == 201
            yield running, mock, seen


async def service_token(lab: Labgate, **fields: Any) -> str:
    status, _, body = await admin_call(lab.running, "POST", ACCOUNT, body={"tokenName": "sdk", **fields})
    assert status == 201, body
    return str(body["tokenInfo"]["accessToken"])


def connect(lab: Labgate, token: str) -> Commcell:
    """What a cvpysdk user writes: the web service URL (labgate's) and the access token."""
    host = lab.running.url.removeprefix("http://")
    return Commcell(host, authtoken=f"Bearer {token}", web_service_url=f"{lab.running.url}/commvault", verify_ssl=False)


def list_everything(lab: Labgate, token: str) -> dict[str, Any]:
    commcell = connect(lab, token)
    return {
        "user": commcell.commcell_username,
        "clients": sorted(commcell.clients.all_clients),
        "client_groups": commcell.client_groups.all_clientgroups,
        "plans": commcell.plans.all_plans,
        "media_agents": sorted(commcell.media_agents.all_media_agents),
    }


async def test_cvpysdk_connects_through_labgate_with_a_service_account_token_and_lists(
    lab: tuple[Labgate, CommvaultAppliance, list[str | None]],
) -> None:
    running, mock, seen = lab
    token = await service_token(running)
    listed = await asyncio.to_thread(list_everything, running, token)
    assert listed == {
        "user": "admin",  # whom the appliance knows: the account labgate's own credential belongs to
        "clients": ["client01", "client02", "client03"],
        "client_groups": {"laptop clients": "1", "servers": "2"},
        "plans": {"server plan": "1", "laptop plan": "2"},
        "media_agents": ["ma01"],
    }
    paths = [path.removeprefix(BASE) for _, path in mock.received]
    assert paths[:2] == ["/", "/WhoAmI"]
    assert {"/Client", "/VSAClientAndClientGroupList", "/ClientGroup", "/V2/Plan", "/V2/MediaAgents"} <= set(paths)
    # The probe went out with no credential at all; everything else with labgate's, never the client's token.
    assert seen[0] is None and seen[1:] == [f"Bearer {STANDING}"] * (len(seen) - 1)
    assert all(token not in (s or "") for s in seen)


def plans_of(lab: Labgate, token: str) -> Any:
    return connect(lab, token).plans.all_plans


def error_body(refused: SDKException) -> dict[str, Any]:
    """The answer's JSON body, as the SDK quotes it in its exception."""
    quoted = re.search(r"\{.*\}", str(refused), re.DOTALL)
    assert quoted is not None, str(refused)
    return dict(json.loads(quoted.group(0)))


async def test_a_custom_token_outside_its_endpoints_is_refused_and_the_sdk_says_so(
    lab: tuple[Labgate, CommvaultAppliance, list[str | None]],
) -> None:
    running, mock, _ = lab
    token = await service_token(running, scope="Custom", apiEndpoints=["/WhoAmI", "/Client"])
    with pytest.raises(SDKException) as refused:
        await asyncio.to_thread(plans_of, running, token)
    # The SDK's own error for a refused call ('Response', '101'), quoting Commvault's error body as the
    # appliance writes it ({"errorCode", "errorMessage"}), with labgate's reason and request id beside it.
    assert (refused.value.exception_module, refused.value.exception_id) == ("Response", "101")
    body = error_body(refused.value)
    assert set(body) == {"errorCode", "errorMessage", "reason", "request_id"}
    assert (body["errorCode"], body["reason"]) == (403, "prefix_not_allowed")
    assert [path.removeprefix(BASE) for _, path in mock.received] == ["/", "/WhoAmI"]  # the plans call never reached it
    plans = await service_token(running, scope="Custom", apiEndpoints=["/WhoAmI", "/plans"])
    assert await asyncio.to_thread(plans_of, running, plans) == {"server plan": "1", "laptop plan": "2"}


async def test_an_unknown_token_does_not_connect(lab: tuple[Labgate, CommvaultAppliance, list[str | None]]) -> None:
    running, mock, _ = lab
    with pytest.raises(SDKException):
        await asyncio.to_thread(connect, running, "not-a-labgate-token")
    assert [path.removeprefix(BASE) for _, path in mock.received] == ["/"]


def renew_with_the_sdk(lab: Labgate, token: str, refresh: str) -> Any:
    """cvpysdk's own ``User.renew_access_token``: POST <base>/V4/AccessToken/Renew with the pair, the token in Authtoken."""
    commcell = connect(lab, token)
    return User.renew_access_token(SimpleNamespace(_commcell_object=commcell), token, refresh)  # type: ignore[arg-type]


async def test_the_sdk_renews_a_labgate_token_through_labgate_and_a_reused_pair_kills_the_chain(
    lab: tuple[Labgate, CommvaultAppliance, list[str | None]],
) -> None:
    """"After thirty minutes, use the Refresh token API": labgate answers it for its own tokens (Commvault's documentation)."""
    running, mock, _ = lab
    status, _, created = await admin_call(running.running, "POST", ACCOUNT, body={"tokenName": "sdk"})
    assert status == 201
    token, refresh = created["tokenInfo"]["accessToken"], created["tokenInfo"]["refreshToken"]
    renewed = await asyncio.to_thread(renew_with_the_sdk, running, token, refresh)
    info = renewed["tokenInfo"]
    assert info["accessTokenId"] == created["tokenInfo"]["accessTokenId"]
    assert info["accessToken"] != token and info["refreshToken"] != refresh
    assert await asyncio.to_thread(plans_of, running, info["accessToken"]) == {"server plan": "1", "laptop plan": "2"}
    assert not any(path.lower().endswith("/v4/accesstoken/renew") for _, path in mock.received)  # never forwarded
    # The old pair again: refused in Commvault's error body, and the whole chain dies with it.
    with pytest.raises(SDKException) as refused:
        await asyncio.to_thread(renew_with_the_sdk, running, info["accessToken"], refresh)
    assert error_body(refused.value)["reason"] == "refresh_token_reused"
    with pytest.raises(SDKException) as dead:
        await asyncio.to_thread(plans_of, running, info["accessToken"])
    assert dead.value.exception_id == "106"  # the SDK's own "token expired or revoked" for a 401 on a Bearer token
