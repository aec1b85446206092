"""GreenLake through labgate's token service: API clients whose reset or deletion kills their tokens (HPE GreenLake access-token blog post).

The same family as tests/gateway/test_greenlake.py, with labgate as the token
issuer instead of GreenLake's SSO: the administrator makes API clients through
labgate's management API, they log in at labgate's ``/oauth/token`` with
``client_credentials``, and labgate reaches the mock GreenLake
(proxy.mocks.greenlake) with a token it got from GreenLake's SSO for itself.
As at GreenLake, resetting a client's secret or deleting the client (or its
owner) kills every token it holds, on its next request.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest

from proxy.mocks.greenlake import ApiCredential, GreenLakeAppliance
from tests.conftest import GatewayStarter, RunningGateway, app_on_loopback
from tests.gateway.appliances import noting_authorization, through_labgate
from tests.gateway.token_service import ADMIN, admin_call, basic, issuer_section

POLICIES = str(Path(__file__).resolve().parents[2] / "policies")
SERVERS = "/compute-ops-mgmt/v1/servers"


class GreenLakeLab:
    """The mock GreenLake, labgate in front of it with its own API client there, and what GreenLake was shown."""

    def __init__(self, mock: GreenLakeAppliance, gateway: RunningGateway, own: ApiCredential, seen: list[str | None]) -> None:
        self.mock = mock
        self.gateway = gateway
        self.own_client_id = own.client_id
        self.own_secret = own.client_secret
        self.authorization_seen = seen

    async def new_client(self, subject: str = "ops", name: str = "backup job") -> dict[str, Any]:
        status, _, made = await admin_call(self.gateway, "POST", "/clients", body={"name": name, "subject": subject, "audience": "greenlake"})
        assert status == 201, made
        assert isinstance(made, dict)
        return made

    async def token_for(self, client_id: str, client_secret: str) -> tuple[int, Any]:
        """labgate's token endpoint, client_credentials with HTTP Basic (RFC 6749 section 4.4)."""
        headers = {"Authorization": basic(client_id, client_secret), "Content-Type": "application/x-www-form-urlencoded"}
        async with aiohttp.ClientSession() as session:
            data = urlencode({"grant_type": "client_credentials"})
            async with session.post(f"{self.gateway.url}/oauth/token", data=data, headers=headers) as answer:
                return answer.status, await answer.json(content_type=None)

    async def token(self, client: dict[str, Any]) -> str:
        status, body = await self.token_for(client["client_id"], client["client_secret"])
        assert status == 200 and body["token_type"] == "Bearer", body
        assert isinstance(body["access_token"], str)
        return body["access_token"]

    async def servers(self, token: str) -> tuple[int, Any]:
        return await through_labgate(self.gateway, "GET", f"/gl{SERVERS}?limit=2", token)

    def forwarded(self) -> list[tuple[str, str]]:
        """What reached the Compute Ops Management API (not GreenLake's SSO)."""
        return [(m, p) for m, p in self.mock.received if p.startswith("/compute-ops")]

    def api_authorization(self) -> list[str | None]:
        """The Authorization of each request that reached the API, in order (SSO logins left out)."""
        return [auth for (_, path), auth in zip(self.mock.received, self.authorization_seen) if path.startswith("/compute-ops")]


@pytest.fixture
async def greenlake(start_gateway: GatewayStarter, tmp_path: Path) -> AsyncIterator[GreenLakeLab]:
    mock = GreenLakeAppliance()
    own = mock.create_client(owner="labgate@lab.example")  # labgate's own API client at GreenLake
    (tmp_path / "greenlake.secret").write_text(own.client_secret + "\n")
    seen: list[str | None] = []
    async with app_on_loopback(noting_authorization(mock.app(), seen)) as url:
        upstream = {
            "name": "greenlake", "path_prefix": "/gl", "pack": "greenlake",
            "token_source": {"type": "issuer", "grants": {"client_credentials": "api-client"}},
            "credential": {"type": "oauth", "grant": "client_credentials", "token_url": f"{url}/as/token.oauth2",
                           "client_id": own.client_id, "client_secret_file": str(tmp_path / "greenlake.secret")},
        }
        gateway = await start_gateway(url, policies=[POLICIES], upstream=upstream, issuer=issuer_section())
        assert (await admin_call(gateway, "POST", "/subjects", body={"name": "ops"}))[0] == 201
        yield GreenLakeLab(mock, gateway, own, seen)


def assert_refused(status: int, body: Any, expected: tuple[int, str]) -> None:
    assert (status, body["reason"]) == expected, body
    assert set(body) == {"error", "error_description", "reason", "request_id"}


def assert_labgates_own_sso_token(lab: GreenLakeLab, client_tokens: list[str]) -> None:
    """Every API request reached GreenLake with a token GreenLake issued to labgate's own client, never a client's."""
    seen = lab.api_authorization()
    assert seen and all(auth is not None and auth.startswith("Bearer ") for auth in seen)
    for auth in seen:
        assert auth is not None and lab.mock.live_tokens.get(auth.removeprefix("Bearer ")) == lab.own_client_id
    for token in client_tokens:
        assert all(token not in str(auth) for auth in lab.authorization_seen)


async def test_an_api_clients_token_lists_servers_with_labgates_own_sso_token(greenlake: GreenLakeLab) -> None:
    client = await greenlake.new_client()
    token = await greenlake.token(client)
    status, body = await greenlake.servers(token)
    assert status == 200 and body["count"] == 2 and body["total"] == 3, body
    status, body = await through_labgate(greenlake.gateway, "GET", f"/gl{SERVERS}/{body['items'][0]['id']}", token)
    assert status == 200 and body["hardware"]["serialNumber"] == "MXQ1140XVX"
    assert len(greenlake.forwarded()) == 2
    assert_labgates_own_sso_token(greenlake, [token])
    assert [p for _, p in greenlake.mock.received].count("/as/token.oauth2") == 1  # one login, held for both requests
    assert_refused(*await through_labgate(greenlake.gateway, "GET", "/gl/api/accounts", token), (403, "prefix_not_allowed"))
    assert len(greenlake.forwarded()) == 2


async def test_resetting_the_secret_kills_the_live_token_on_its_next_request(greenlake: GreenLakeLab) -> None:
    client = await greenlake.new_client()
    token = await greenlake.token(client)
    assert (await greenlake.servers(token))[0] == 200
    status, _, reset = await admin_call(greenlake.gateway, "POST", f"/clients/{client['client_id']}/reset-secret")
    assert status == 200 and reset["client_secret"] != client["client_secret"]
    assert_refused(*await greenlake.servers(token), (401, "revoked"))
    assert len(greenlake.forwarded()) == 1
    status, body = await greenlake.token_for(client["client_id"], client["client_secret"])  # the old secret is dead
    assert (status, body["error"]) == (401, "invalid_client")
    renewed = await greenlake.token({**client, "client_secret": reset["client_secret"]})
    assert (await greenlake.servers(renewed))[0] == 200
    assert_labgates_own_sso_token(greenlake, [token, renewed])


async def test_deleting_the_client_kills_its_token_on_its_next_request(greenlake: GreenLakeLab) -> None:
    client = await greenlake.new_client()
    other = await greenlake.new_client(name="report job")
    token, others = await greenlake.token(client), await greenlake.token(other)
    assert (await greenlake.servers(token))[0] == 200
    status, _, _ = await admin_call(greenlake.gateway, "DELETE", f"/clients/{client['client_id']}")
    assert status == 204
    assert_refused(*await greenlake.servers(token), (401, "revoked"))
    assert len(greenlake.forwarded()) == 1
    assert (await greenlake.token_for(client["client_id"], client["client_secret"]))[0] == 401
    assert (await greenlake.servers(others))[0] == 200  # another client of the same subject lives on


async def test_deleting_the_subject_kills_its_tokens_and_its_clients(greenlake: GreenLakeLab) -> None:
    first, second = await greenlake.new_client(), await greenlake.new_client(name="report job")
    tokens = [await greenlake.token(first), await greenlake.token(second)]
    for token in tokens:
        assert (await greenlake.servers(token))[0] == 200
    status, _, _ = await admin_call(greenlake.gateway, "DELETE", "/subjects/ops")
    assert status == 204
    for token in tokens:
        assert_refused(*await greenlake.servers(token), (401, "revoked"))
    assert len(greenlake.forwarded()) == 2
    for client in (first, second):
        assert (await admin_call(greenlake.gateway, "GET", f"/clients/{client['client_id']}"))[0] == 404
        assert (await greenlake.token_for(client["client_id"], client["client_secret"]))[0] == 401


async def test_no_secret_or_token_reaches_a_log_line_or_an_answer(greenlake: GreenLakeLab, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        client = await greenlake.new_client()
        token = await greenlake.token(client)
        answers = [(await greenlake.servers(token))[1]]
        await admin_call(greenlake.gateway, "POST", f"/clients/{client['client_id']}/reset-secret")
        answers.append((await greenlake.servers(token))[1])
        answers.append((await greenlake.token_for(client["client_id"], client["client_secret"]))[1])
        answers.append((await admin_call(greenlake.gateway, "GET", "/clients"))[2])
    sso_tokens = [auth.removeprefix("Bearer ") for auth in greenlake.api_authorization() if auth]
    assert sso_tokens
    for secret in (token, client["client_secret"], greenlake.own_secret, ADMIN[1], *sso_tokens):
        assert secret not in caplog.text and secret not in str(answers)
