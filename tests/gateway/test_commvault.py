"""Commvault end to end: service-account tokens from labgate's token service in front of the mock REST API (Commvault service-account access token documentation).

The administrator makes service-account access tokens through labgate's
management API, one scope each; they reach the mock Commvault appliance
(proxy.mocks.commvault) only through labgate, which forwards with a standing
All-scope access token of its own, as ``labgate demo`` wires it.  Scopes,
endpoint lists, IP allowlists and renewal are labgate's to enforce; what it
refuses never reaches the appliance, and what it allows the appliance would
allow the service account's own token of that scope too.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from proxy.mocks.commvault import ACCESS_TOKEN_ADMIN, CommvaultAppliance
from tests.clock import Clock
from tests.conftest import app_on_loopback
from tests.gateway.appliances import (  # noqa: F401 - a fixture
    direct,
    noting_authorization,
    through_labgate,
    transport,
)
from tests.gateway.token_service import ADMIN, ADMIN_HASH, admin_call
from tests.issuer.shipped import (
    ISSUER,
    Labgate,
    commvault_upstream,
    move_clocks,
    running_labgate,
    shipped_config,
)

STANDING = "commvault-standing-" + secrets.token_hex(16)  # labgate's credential: an All-scope token of "admin"
BASE = "/commandcenter/api"
ACCOUNT = "/service-accounts/svc-backup/tokens"
DAY = 86400
ONE_TOUCH = ["/Client", "/MediaAgent", "/ClientGroup", "/V4/ServerGroup", "/FirewallSummary"]
NATIVE_TYPES = {"All": 0, "Microsoft SCIM": 1, "Custom": 3, "1-Touch recovery": 4}  # the mock's tokenType numbers


@dataclass
class CommvaultLab:
    """The mock appliance, labgate in front of it, and the Authorization of every request the appliance got."""

    mock: CommvaultAppliance
    url: str
    lab: Labgate
    authorization_seen: list[str | None]

    async def create(self, **fields: Any) -> dict[str, Any]:
        status, _, body = await admin_call(self.lab.running, "POST", ACCOUNT, body={"tokenName": "backup", **fields})
        assert status == 201, body
        info = body["tokenInfo"]
        assert isinstance(info, dict)
        return info

    async def call(self, method: str, path: str, token: str, *, client_ip: str | None = None) -> tuple[int, Any]:
        """Through labgate; ``client_ip`` is what the trusted loopback proxy says in X-Forwarded-For."""
        headers = {"X-Forwarded-For": client_ip} if client_ip is not None else None
        return await through_labgate(self.lab.running, method, f"/commvault{path}", token, headers=headers,
                                     body={} if method in ("POST", "PUT") else None)

    def forwarded(self) -> list[tuple[str, str]]:
        return [(method, path.removeprefix(BASE)) for method, path in self.mock.received if path.startswith(BASE)]


@pytest.fixture
async def commvault(tmp_path: Path, transport: str) -> AsyncIterator[CommvaultLab]:
    mock = CommvaultAppliance(base_path=BASE, trust_forwarded_for=True)
    mock.add_standing_token(STANDING)
    seen: list[str | None] = []
    (tmp_path / "commvault.token").write_text(STANDING + "\n")
    async with app_on_loopback(noting_authorization(mock.app(), seen)) as url:
        upstream = {**commvault_upstream(url + BASE), "transport": transport,
                    "credential": {"type": "bearer", "token_file": str(tmp_path / "commvault.token")}}
        issuer = {**ISSUER, "key_refresh_interval": 1, "admin": {"username": ADMIN[0], "password_hash": ADMIN_HASH}}
        config = shipped_config(tmp_path, [upstream], issuer=issuer, trusted_proxies=["127.0.0.1"])
        async with running_labgate(config) as lab:
            assert (await admin_call(lab.running, "POST", "/subjects", body={"name": "svc-backup"}))[0] == 201
            yield CommvaultLab(mock, url, lab, seen)


def assert_refused(status: int, body: Any, expected: tuple[int, str]) -> None:
    """labgate's own refusal (management API, token endpoint)."""
    assert (status, body["reason"]) == expected, body
    assert set(body) == {"error", "error_description", "reason", "request_id"}


def assert_appliance_refused(status: int, body: Any, expected: tuple[int, str]) -> None:
    """labgate's refusal of a call to the appliance, in Commvault's own error body (the pack's error_format)."""
    assert (status, body["reason"]) == expected, body
    assert set(body) == {"errorCode", "errorMessage", "reason", "request_id"}
    assert body["errorCode"] == status


async def native_token(lab: CommvaultLab, scope: str, endpoints: list[str]) -> str:
    """The service account's own access token of ``scope``, made at the appliance by logging in (Command Center's way)."""
    password = base64.b64encode(b"svc-pw").decode()
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{lab.url}{BASE}/Login", json={"username": "svc-backup", "password": password}) as answer:
            login = (await answer.json())["token"]
        body = {"tokenName": "native", "tokenType": NATIVE_TYPES[scope], "apiEndpoints": endpoints}
        async with session.post(f"{lab.url}{BASE}/V4/AccessToken", json=body, headers={"Authtoken": login}) as answer:
            token = (await answer.json())["tokenInfo"]["accessToken"]
    assert isinstance(token, str)
    return token


# -- each scope reaches what it may, with labgate's credential --------------------------------------

SCOPES = [
    pytest.param("All", {}, [("GET", "/Client", 200), ("GET", "/v2/plan", 200), ("GET", "/MediaAgent", 200),
                             ("GET", "/clientgroup", 200), ("DELETE", "/Client/3", 200)],
                 [("POST", "/V4/AccessToken", "operation_forbidden")], id="all"),
    pytest.param("Custom", {"apiEndpoints": "/PLANS\n/CLIENTGroup"},
                 [("GET", "/V2/Plan", 200), ("GET", "/clientgroup", 200), ("GET", "/ClientGroup", 200)],
                 [("GET", "/Client", "prefix_not_allowed"), ("DELETE", "/client/2", "prefix_not_allowed"),
                  ("GET", "/MediaAgent", "prefix_not_allowed"), ("GET", "/V4/ServerGroup", "prefix_not_allowed")], id="custom"),
    pytest.param("Hyperscale", {}, [("GET", "/V4/Storage/HyperScale/Nodes", 404)],  # forwarded; the mock has no Hyperscale API
                 [("GET", "/Client", "route_not_allowed"), ("GET", "/V2/Plan", "route_not_allowed")], id="hyperscale"),
    pytest.param("1-Touch recovery", {}, [("GET", path, 200) for path in ONE_TOUCH] + [("GET", "/v4/servergroup", 200)],
                 [("GET", "/V2/Plan", "prefix_not_allowed"), ("GET", "/ClientGroupX", "prefix_not_allowed"),
                  ("GET", "/V4/ServerGroupings", "prefix_not_allowed"), ("GET", "/V4/Storage/HyperScale", "prefix_not_allowed")],
                 id="one-touch"),
    pytest.param("Microsoft SCIM", {}, [("GET", "/scim/Users", 404)],  # forwarded; the mock serves no SCIM API
                 [("GET", "/Client", "prefix_not_allowed"), ("GET", "/scimx", "prefix_not_allowed")], id="scim"),
]


@pytest.mark.parametrize("scope, fields, allowed, refused", SCOPES)
async def test_each_scope_reaches_its_apis_at_the_appliance_and_nothing_else(
    commvault: CommvaultLab, scope: str, fields: dict[str, Any], allowed: list[tuple[str, str, int]], refused: list[tuple[str, str, str]]
) -> None:
    token = (await commvault.create(scope=scope, **fields))["accessToken"]
    for method, path, status in allowed:
        got, body = await commvault.call(method, path, token)
        assert got == status, (path, body)
    assert commvault.forwarded() == [(method, path) for method, path, _ in allowed]
    for method, path, reason in refused:
        assert_appliance_refused(*await commvault.call(method, path, token), (403, reason))
    assert commvault.forwarded() == [(method, path) for method, path, _ in allowed]  # nothing refused was forwarded
    assert commvault.authorization_seen == [f"Bearer {STANDING}"] * len(allowed)
    assert (await direct(commvault.url, "GET", f"{BASE}/Client", token))[0] == 401  # the appliance knows no labgate token


@pytest.mark.parametrize("scope, endpoints", [("All", []), ("Custom", ["/V2/Plan", "/Client"]), ("1-Touch recovery", [])])
async def test_what_labgate_lets_through_the_appliance_allows_the_scopes_own_token(
    commvault: CommvaultLab, scope: str, endpoints: list[str]
) -> None:
    """labgate is never looser than Commvault: the service account's native token of the scope is let in too."""
    ours = (await commvault.create(scope=scope, **({"apiEndpoints": endpoints} if endpoints else {})))["accessToken"]
    native = await native_token(commvault, scope, endpoints)
    for path in ("/Client", "/client", "/V2/Plan", "/MediaAgent", "/ClientGroup", "/V4/ServerGroup", "/FirewallSummary"):
        status, _ = await commvault.call("GET", path, ours)
        if status == 200:
            assert (await direct(commvault.url, "GET", BASE + path, native))[0] == 200, path
        else:
            assert status == 403, path


async def test_plans_opens_every_plan_api_as_the_documentation_says(commvault: CommvaultLab) -> None:
    """"If you enter /plans, you can execute all plan operation REST APIs starting with /plan." (Commvault's
    documentation, 'Creating an access token for a service account'.)  labgate and the appliance read it alike."""
    plans = (await commvault.create(scope="Custom", apiEndpoints=["/plans"]))["accessToken"]
    opened, closed = ("/V2/Plan", "/v2/plan", "/Plan", "/PlanSummary", "/Plans/3"), ("/Client", "/V2/Client", "/ServerPlan", "/Subclient/Plan")
    for path in opened:
        assert (await commvault.call("GET", path, plans))[0] != 403, path  # forwarded: 200 where the mock serves it, else 404
    for path in closed:
        assert_appliance_refused(*await commvault.call("GET", path, plans), (403, "prefix_not_allowed"))
    assert [p for _, p in commvault.forwarded()] == list(opened)
    native = await native_token(commvault, "Custom", ["/plans"])
    for path in opened:
        assert (await direct(commvault.url, "GET", BASE + path, native))[0] != 403, path
    for path in closed:
        assert (await direct(commvault.url, "GET", BASE + path, native))[0] in (403, 404), path


async def test_client_opens_client_group_as_it_starts_with_client(commvault: CommvaultLab) -> None:
    only_client = (await commvault.create(scope="Custom", apiEndpoints=["/Client"]))["accessToken"]
    only_groups = (await commvault.create(tokenName="groups", scope="Custom", apiEndpoints=["/clientGROUP"]))["accessToken"]
    status, body = await commvault.call("GET", "/ClientGroup", only_client)
    assert status == 200 and [g["name"] for g in body["groups"]] == ["Laptop Clients", "Servers"]
    assert_appliance_refused(*await commvault.call("GET", "/Client", only_groups), (403, "prefix_not_allowed"))
    assert commvault.forwarded() == [("GET", "/ClientGroup")]


# -- the IP allowlist, in every form Commvault documents ------------------------------------------

ALLOWLISTS = [
    pytest.param("10.0.0.1", ["10.0.0.1"], ["10.0.0.2", "10.0.0.10"], id="ipv4"),
    pytest.param("2001:0db8:85a3:0000:0000:8a2e:0370:7334", ["2001:db8:85a3::8a2e:370:7334"], ["2001:db8:85a3::8a2e:370:7335"],
                 id="ipv6-full"),
    pytest.param("2001:db8:85a3::8a2e:370:7334", ["2001:0db8:85a3:0000:0000:8a2e:0370:7334"], ["2001:db8:85a3::8a2e:370:7333"],
                 id="ipv6-compressed"),
    pytest.param("1.1.1.0/24", ["1.1.1.0", "1.1.1.255"], ["1.1.2.0", "1.1.0.255"], id="ipv4-cidr"),
    pytest.param("2001:0db8:85a3::/64", ["2001:db8:85a3::1", "2001:db8:85a3:0:ffff:ffff:ffff:ffff"], ["2001:db8:85a3:1::1"],
                 id="ipv6-cidr"),
    pytest.param("1.1.1.0 – 1.1.1.25", ["1.1.1.0", "1.1.1.25", "::ffff:1.1.1.7"], ["1.1.1.26", "1.1.0.255"], id="ipv4-en-dash-range"),
    pytest.param("2001:db8::1 - 2001:db8::ffff", ["2001:db8::1", "2001:db8::ffff"], ["2001:db8::", "2001:db8::1:0"],
                 id="ipv6-hyphen-range"),
]


@pytest.mark.parametrize("entry, inside, outside", ALLOWLISTS)
async def test_the_ip_allowlist_admits_only_its_addresses_as_the_appliance_would(
    commvault: CommvaultLab, entry: str, inside: list[str], outside: list[str]
) -> None:
    # The appliance holds the same allowlist for the account labgate forwards as, and reads the client labgate names.
    commvault.mock.set_ip_allowlist("admin", [entry])
    info = await commvault.create(ipAllowlist=[entry])
    assert info["ipAllowlist"] == [entry] and jwt.decode(info["accessToken"], options={"verify_signature": False})["client_ips"] == [entry]
    for address in inside:
        status, body = await commvault.call("GET", "/Client", info["accessToken"], client_ip=address)
        assert status == 200 and len(body["clientProperties"]) == 3, (address, body)
    assert len(commvault.forwarded()) == len(inside)
    refused: list[str | None] = [*outside, None]  # None: no forwarded client, so the loopback proxy itself
    for client_ip in refused:
        assert_appliance_refused(*await commvault.call("GET", "/Client", info["accessToken"], client_ip=client_ip), (403, "client_ip_not_allowed"))
    assert len(commvault.forwarded()) == len(inside)
    for client_ip in refused:
        async with aiohttp.ClientSession() as session:  # the appliance refuses those clients too
            headers = {"Authorization": f"Bearer {STANDING}", "X-Forwarded-For": client_ip or "127.0.0.1"}
            async with session.get(f"{commvault.url}{BASE}/Client", headers=headers) as answer:
                assert answer.status == 403, client_ip


# -- 30-minute access tokens, renewable for 90 days -------------------------------------------------


async def test_access_tokens_live_30_minutes_and_renew_until_90_days_after_creation_and_not_after(commvault: CommvaultLab) -> None:
    clock = Clock()
    move_clocks(commvault.lab, clock)
    info = await commvault.create(scope="Custom", apiEndpoints=["/ClientGroup"])
    created = info["createdTimestamp"]
    assert info["renewableUntilTimestamp"] == created + 90 * DAY
    first = jwt.decode(info["accessToken"], options={"verify_signature": False})
    assert first["exp"] - first["iat"] == 1800 and info["tokenExpiryTimestamp"] == first["exp"]

    status, renewed = await renew(commvault, info["refreshToken"])
    assert status == 200 and renewed["expires_in"] == 1800
    assert (await commvault.call("GET", "/clientgroup", renewed["access_token"]))[0] == 200  # the renewed token reaches the appliance
    assert_appliance_refused(*await commvault.call("GET", "/Client", renewed["access_token"]), (403, "prefix_not_allowed"))
    refresh = renewed["refresh_token"]

    clock.advance(created + 90 * DAY - 1 - clock.now)  # a second before renewableUntilTimestamp
    status, renewed = await renew(commvault, refresh)
    assert status == 200, renewed
    late = jwt.decode(renewed["access_token"], options={"verify_signature": False})
    assert late["exp"] - late["iat"] == 1800 and late["client_id"] == info["accessTokenId"]
    clock.advance(2)  # past 90 days after creation: no more
    assert_refused(*await renew(commvault, renewed["refresh_token"]), (400, "renewal_ended"))
    assert commvault.forwarded() == [("GET", "/clientgroup")]


async def renew(commvault: CommvaultLab, refresh_token: str) -> tuple[int, Any]:
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{commvault.lab.running.url}/oauth/token", data=form) as answer:
            return answer.status, await answer.json(content_type=None)


# -- an access token never creates, edits or deletes access tokens ----------------------------------

ADMINISTERING = [("POST", "/V4/AccessToken"), ("POST", "/v4/accesstoken/"), ("PUT", "/V4/AccessToken/7"),
                 ("DELETE", "/V4/AccessToken/7"), ("DELETE", "/v4/ACCESSTOKEN/7"), ("PUT", "/V4/AccessToken/7/"),
                 ("POST", "/V4/AccessToken/7/Renew/x"), ("DELETE", "/V4/AccessToken/7/a/b/c")]


@pytest.mark.parametrize("scope, fields", [
    ("All", {}), ("Custom", {"apiEndpoints": ["/V4/AccessToken", "/Client"]}), ("Hyperscale", {}),
    ("1-Touch recovery", {}), ("Microsoft SCIM", {}),
], ids=["all", "custom-listing-it", "hyperscale", "one-touch", "scim"])
async def test_an_access_token_can_never_administer_access_tokens(commvault: CommvaultLab, scope: str, fields: dict[str, Any]) -> None:
    info = await commvault.create(scope=scope, **fields)
    token = info["accessToken"]
    for method, path in ADMINISTERING:
        assert_appliance_refused(*await commvault.call(method, path, token), (403, "operation_forbidden"))
    assert commvault.forwarded() == []
    # The appliance has the same rule for its own access tokens: labgate's credential cannot either.
    status, body = await direct(commvault.url, "POST", f"{BASE}/V4/AccessToken", STANDING, body={"tokenName": "x"})
    assert (status, body["errorMessage"]) == (403, ACCESS_TOKEN_ADMIN)

    for method, path in (("POST", ACCOUNT), ("GET", ACCOUNT), ("DELETE", f"{ACCOUNT}/{info['accessTokenId']}")):
        status, _, refused = await admin_call(commvault.lab.running, method, path, authorization=f"Bearer {token}",
                                              body={"tokenName": "minted-by-a-token"} if method == "POST" else None)
        assert_refused(status, refused, (403, "token_management_forbidden"))
    listed = (await admin_call(commvault.lab.running, "GET", ACCOUNT))[2]["accessTokens"]
    assert [t["accessTokenId"] for t in listed] == [info["accessTokenId"]]
