"""The mock Commvault over real HTTP: logins, service-account access tokens, their scopes and renewal chain."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from proxy.mocks.commvault import ACCESS_TOKEN_ADMIN, CommvaultAppliance
from tests.clock import Clock
from tests.conftest import app_on_loopback

BASE = "/commandcenter/api"
DAY = 86400


@pytest.fixture
def clock() -> Clock:
    return Clock(1_800_000_000.0)


@pytest.fixture
async def commvault(clock: Clock) -> AsyncIterator[tuple[CommvaultAppliance, str]]:
    mock = CommvaultAppliance(clock=clock)
    async with app_on_loopback(mock.app()) as url:
        yield mock, url + BASE


async def call(url: str, method: str, path: str, *, authtoken: str | None = None, bearer: str | None = None,
               body: Any = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    sent = dict(headers or {})
    if authtoken:
        sent["Authtoken"] = authtoken
    if bearer:
        sent["Authorization"] = f"Bearer {bearer}"
    async with aiohttp.ClientSession() as client:
        async with client.request(method, f"{url}{path}", json=body, headers=sent) as response:
            text = await response.text()
            return response.status, (await response.json(content_type=None)) if text.startswith(("{", "[")) else text


async def login(url: str, username: str = "svc-backup", password: str = "svc-pw") -> str:
    status, body = await call(url, "POST", "/Login", body={"username": username, "password": base64.b64encode(password.encode()).decode()})
    assert status == 200 and body["errList"] == [], body
    return str(body["token"])


async def create(url: str, session: str, **request: Any) -> dict[str, Any]:
    status, body = await call(url, "POST", "/V4/AccessToken", authtoken=session, body={"tokenName": "backup-job", **request})
    assert status == 200, body
    return dict(body["tokenInfo"])


async def renew(url: str, info: dict[str, Any]) -> tuple[int, Any]:
    return await call(url, "POST", "/V4/AccessToken/Renew", body={"accessToken": info["accessToken"], "refreshToken": info["refreshToken"]})


async def test_login_answers_a_qsdk_token_for_the_authtoken_header(commvault: tuple[CommvaultAppliance, str]) -> None:
    _, url = commvault
    session = await login(url)
    assert session.startswith("QSDK ")
    status, body = await call(url, "GET", "/Client", authtoken=session)
    assert status == 200 and body["clientProperties"][0]["client"]["clientEntity"]["clientName"] == "client01"


@pytest.mark.parametrize(
    "body",
    [{"username": "svc-backup", "password": base64.b64encode(b"wrong").decode()},
     {"username": "svc-backup", "password": "svc-pw"},  # not base64
     {"username": "nobody", "password": base64.b64encode(b"svc-pw").decode()},
     {"username": "svc-backup"}, None],
    ids=["wrong-password", "plain-password", "unknown-user", "no-password", "no-body"],
)
async def test_a_failed_login_is_200_with_an_errlist(commvault: tuple[CommvaultAppliance, str], body: Any) -> None:
    mock, url = commvault
    status, answer = await call(url, "POST", "/Login", body=body)
    assert status == 200 and answer["errList"][0]["errLogMessage"] and "token" not in answer
    assert mock.logins == {}


async def test_a_login_idles_out_after_30_minutes_and_can_be_renewed_or_ended(commvault: tuple[CommvaultAppliance, str], clock: Clock) -> None:
    _, url = commvault
    session = await login(url)
    clock.now += 29 * 60
    assert (await call(url, "GET", "/Client", authtoken=session))[0] == 200
    clock.now += 29 * 60
    status, renewed = await call(url, "POST", "/RenewLoginToken", authtoken=session, body={"sessionId": session})
    assert status == 200 and renewed["token"] != session
    assert (await call(url, "GET", "/Client", authtoken=session))[0] == 401
    assert (await call(url, "POST", "/Logout", authtoken=renewed["token"])) == (200, "User logged out")
    assert (await call(url, "GET", "/Client", authtoken=renewed["token"]))[0] == 401
    idle = await login(url)
    clock.now += 30 * 60
    status, body = await call(url, "GET", "/Client", authtoken=idle)
    assert (status, body["errorCode"]) == (401, 401)
    status, body = await call(url, "POST", "/RenewLoginToken", body={"sessionId": idle})
    assert status == 401 and body["error"]["errLogMessage"]


async def test_paths_are_case_insensitive_and_live_under_the_base_path(commvault: tuple[CommvaultAppliance, str]) -> None:
    mock, url = commvault
    session = await login(url)
    for path in ("/client", "/CLIENT", "/ClientGroup", "/v4/servergroup", "/V2/plan", "/mediaagent", "/FirewallSummary"):
        assert (await call(url, "GET", path, authtoken=session))[0] == 200, path
    assert (await call(url.replace(BASE, "/CommandCenter/API"), "GET", "/Client", authtoken=session))[0] == 200
    assert (await call(url.replace(BASE, ""), "GET", "/Client", authtoken=session))[0] == 404
    assert (await call(url, "GET", "/NoSuchThing", authtoken=session))[0] == 404
    assert (await call(url, "PATCH", "/Client", authtoken=session))[0] == 405
    older = CommvaultAppliance(base_path="/webconsole/api")
    async with app_on_loopback(older.app()) as other:
        assert (await call(other + "/webconsole/api", "GET", "/Client", authtoken=await login(other + "/webconsole/api")))[0] == 200


async def test_resources_have_the_documented_shapes(commvault: tuple[CommvaultAppliance, str]) -> None:
    _, url = commvault
    session = await login(url)
    entity = (await call(url, "GET", "/Client", authtoken=session))[1]["clientProperties"][0]["client"]["clientEntity"]
    assert set(entity) == {"clientId", "clientName", "hostName", "displayName"}
    assert "groups" in (await call(url, "GET", "/ClientGroup", authtoken=session))[1]
    assert "serverGroups" in (await call(url, "GET", "/V4/ServerGroup", authtoken=session))[1]
    assert "plans" in (await call(url, "GET", "/V2/Plan", authtoken=session))[1]
    status, body = await call(url, "DELETE", "/Client/2", authtoken=session)
    assert (status, body) == (200, {"response": [{"errorCode": 0, "entity": {"clientId": 2, "clientName": "client02", "_type_": 3}}]})
    status, body = await call(url, "DELETE", "/Client/2", authtoken=session)
    assert status == 200 and body["response"][0]["errorCode"] != 0
    assert len((await call(url, "GET", "/Client", authtoken=session))[1]["clientProperties"]) == 2


async def test_an_all_scope_token_lives_30_minutes_with_a_refresh_token(commvault: tuple[CommvaultAppliance, str], clock: Clock) -> None:
    _, url = commvault
    info = await create(url, await login(url))
    assert set(info) == {"accessTokenId", "tokenName", "tokenType", "userId", "accessToken", "refreshToken",
                         "tokenExpiryTimestamp", "refreshTokenExpiryTimestamp", "renewableUntilTimestamp", "apiEndpoints"}
    assert info["tokenExpiryTimestamp"] == clock.now + 30 * 60
    assert info["renewableUntilTimestamp"] == clock.now + 90 * DAY
    assert info["refreshTokenExpiryTimestamp"] == clock.now + 30 * 60 + 14 * DAY
    for path in ("/Client", "/V2/Plan", "/MediaAgent"):
        assert (await call(url, "GET", path, bearer=info["accessToken"]))[0] == 200
    clock.now += 30 * 60
    status, body = await call(url, "GET", "/Client", bearer=info["accessToken"])
    assert (status, body["errorCode"]) == (401, 401)


async def test_the_access_lifetime_is_a_parameter_because_releases_differ(clock: Clock) -> None:
    mock = CommvaultAppliance(access_token_lifetime=7200, clock=clock)
    async with app_on_loopback(mock.app()) as url:
        info = await create(url + BASE, await login(url + BASE))
        assert info["tokenExpiryTimestamp"] == clock.now + 7200


@pytest.mark.parametrize(
    "method, path, body",
    [("POST", "/V4/AccessToken", {"tokenName": "more"}), ("POST", "/v4/accesstoken", {"tokenName": "more"}),
     ("PUT", "/V4/AccessToken/1", {"tokenName": "renamed"}), ("DELETE", "/V4/AccessToken/1", None)],
    ids=["create", "create-lowercase", "edit", "delete"],
)
async def test_an_access_token_cannot_create_edit_or_delete_access_tokens(
    commvault: tuple[CommvaultAppliance, str], method: str, path: str, body: Any
) -> None:
    mock, url = commvault
    info = await create(url, await login(url))
    status, answer = await call(url, method, path, bearer=info["accessToken"], body=body)
    assert (status, answer) == (403, {"errorCode": 403, "errorMessage": ACCESS_TOKEN_ADMIN})
    assert [(c.id, c.name) for c in mock.tokens.chains.values()] == [(1, "backup-job")]


@pytest.mark.parametrize(
    "request_body",
    [{"tokenName": ""}, {"tokenType": 7}, {"tokenType": True}, {"tokenType": 3}, {"tokenType": 3, "apiEndpoints": ["Client"]},
     {"renewableUntilTimestamp": 1_700_000_000}, {"renewableUntilTimestamp": "forever"},
     {"tokenType": 1, "tokenExpiryTimestamp": 1_800_000_000 + 366 * DAY}, {"tokenType": 4, "tokenExpiryTimestamp": 1_800_000_000 + 15 * DAY},
     {"tokenType": 4, "tokenExpiryTimestamp": 1_700_000_000}],
    ids=["empty-name", "unknown-type", "bool-type", "custom-without-endpoints", "endpoint-not-a-path", "renewable-until-past",
         "renewable-until-text", "scim-beyond-365-days", "one-touch-beyond-14-days", "one-touch-in-the-past"],
)
async def test_an_invalid_token_request_is_400(commvault: tuple[CommvaultAppliance, str], request_body: dict[str, Any]) -> None:
    mock, url = commvault
    status, body = await call(url, "POST", "/V4/AccessToken", authtoken=await login(url), body={"tokenName": "t", **request_body})
    assert (status, body["errorCode"]) == (400, 400)
    assert mock.tokens.chains == {}


async def test_a_custom_token_reaches_only_its_endpoints_by_prefix(commvault: tuple[CommvaultAppliance, str]) -> None:
    _, url = commvault
    info = await create(url, await login(url), tokenType=3, apiEndpoints=["/V2/Plan", "/Client"])
    for path in ("/v2/plan", "/Client", "/ClientGroup"):  # "/Client" starts "/ClientGroup" too
        assert (await call(url, "GET", path, bearer=info["accessToken"]))[0] == 200, path
    for path in ("/MediaAgent", "/V4/ServerGroup"):
        status, body = await call(url, "GET", path, bearer=info["accessToken"])
        assert (status, body["errorCode"]) == (403, 403), path


async def test_one_touch_and_scim_tokens_have_fixed_lifetimes_and_no_refresh(commvault: tuple[CommvaultAppliance, str], clock: Clock) -> None:
    _, url = commvault
    session = await login(url)
    one_touch = await create(url, session, tokenType=4)
    scim = await create(url, session, tokenType=1)
    assert one_touch["tokenExpiryTimestamp"] == clock.now + 7 * DAY and scim["tokenExpiryTimestamp"] == clock.now + 30 * DAY
    assert "refreshToken" not in one_touch and "refreshToken" not in scim
    for path in ("/Client", "/MediaAgent", "/ClientGroup", "/V4/ServerGroup", "/FirewallSummary", "/Client/1"):
        method = "DELETE" if path == "/Client/1" else "GET"
        assert (await call(url, method, path, bearer=one_touch["accessToken"]))[0] == 200, path
    assert (await call(url, "GET", "/V2/Plan", bearer=one_touch["accessToken"]))[0] == 403
    assert (await call(url, "GET", "/Client", bearer=scim["accessToken"]))[0] == 403
    status, body = await call(url, "POST", "/V4/AccessToken/Renew", body={"accessToken": one_touch["accessToken"], "refreshToken": "x"})
    assert (status, body["errorCode"]) == (400, 400)
    clock.now += 7 * DAY
    assert (await call(url, "GET", "/Client", bearer=one_touch["accessToken"]))[0] == 401


async def test_renewing_rotates_the_pair(commvault: tuple[CommvaultAppliance, str], clock: Clock) -> None:
    _, url = commvault
    first = await create(url, await login(url))
    clock.now += 31 * 60  # expired: what renewing is for
    status, body = await renew(url, first)
    second = body["tokenInfo"]
    assert status == 200 and second["accessToken"] != first["accessToken"] and second["refreshToken"] != first["refreshToken"]
    assert second["accessTokenId"] == first["accessTokenId"] and second["tokenExpiryTimestamp"] == clock.now + 30 * 60
    assert (await call(url, "GET", "/Client", bearer=second["accessToken"]))[0] == 200
    assert (await call(url, "GET", "/Client", bearer=first["accessToken"]))[0] == 401


async def test_reusing_an_old_pair_kills_the_whole_chain(commvault: tuple[CommvaultAppliance, str]) -> None:
    _, url = commvault
    first = await create(url, await login(url))
    second = (await renew(url, first))[1]["tokenInfo"]
    status, body = await renew(url, first)
    assert (status, body["errorCode"]) == (401, 401)
    assert (await call(url, "GET", "/Client", bearer=second["accessToken"]))[0] == 401
    assert (await renew(url, second))[0] == 401
    # Half an old pair is reuse too.
    other = await create(url, await login(url))
    newer = (await renew(url, other))[1]["tokenInfo"]
    status, _ = await call(url, "POST", "/V4/AccessToken/Renew", body={"accessToken": newer["accessToken"], "refreshToken": other["refreshToken"]})
    assert status == 401 and (await call(url, "GET", "/Client", bearer=newer["accessToken"]))[0] == 401


async def test_renewal_ends_14_days_after_the_access_token_expired(commvault: tuple[CommvaultAppliance, str], clock: Clock) -> None:
    _, url = commvault
    info = await create(url, await login(url))
    clock.now += 30 * 60 + 14 * DAY - 1
    status, body = await renew(url, info)
    assert status == 200
    clock.now += 30 * 60 + 14 * DAY
    status, body = await renew(url, body["tokenInfo"])
    assert (status, body["errorMessage"]) == (401, "The refresh token has expired")


async def test_renewal_ends_at_renewable_until(commvault: tuple[CommvaultAppliance, str], clock: Clock) -> None:
    _, url = commvault
    info = await create(url, await login(url), renewableUntilTimestamp=clock.now + 3600)
    created = clock.now
    clock.now += 40 * 60
    info = (await renew(url, info))[1]["tokenInfo"]
    assert info["refreshTokenExpiryTimestamp"] == created + 3600  # capped by renewableUntil
    clock.now += 20 * 60
    assert (await renew(url, info))[0] == 401


async def test_renewable_until_0_renews_forever_if_renewed_in_time(commvault: tuple[CommvaultAppliance, str], clock: Clock) -> None:
    _, url = commvault
    info = await create(url, await login(url), renewableUntilTimestamp=0)
    assert info["renewableUntilTimestamp"] == 0
    for _ in range(10):  # 130 days, well past the 90-day default
        clock.now += 13 * DAY
        status, body = await renew(url, info)
        assert status == 200
        info = body["tokenInfo"]


async def test_tokens_are_listed_edited_and_deleted_by_their_owner(commvault: tuple[CommvaultAppliance, str]) -> None:
    _, url = commvault
    session, admin = await login(url), await login(url, "admin", "admin-pw")
    info = await create(url, session, tokenType=3, apiEndpoints=["/V2/Plan"])
    status, listed = await call(url, "GET", "/V4/AccessToken/?userId=2", authtoken=session)
    assert status == 200 and [t["tokenName"] for t in listed["accessTokens"]] == ["backup-job"]
    assert "accessToken" not in listed["accessTokens"][0] and "refreshToken" not in listed["accessTokens"][0]
    assert (await call(url, "GET", "/v4/accesstoken?userId=1", authtoken=session))[0] == 403
    status, edited = await call(url, "PUT", f"/V4/AccessToken/{info['accessTokenId']}", authtoken=session,
                                body={"tokenName": "renamed", "apiEndpoints": ["/Client"]})
    assert status == 200 and (edited["tokenInfo"]["tokenName"], edited["tokenInfo"]["apiEndpoints"]) == ("renamed", ["/Client"])
    assert (await call(url, "GET", "/Client", bearer=info["accessToken"]))[0] == 200
    assert (await call(url, "GET", "/V2/Plan", bearer=info["accessToken"]))[0] == 403
    assert (await call(url, "PUT", f"/V4/AccessToken/{info['accessTokenId']}", authtoken=session, body={"apiEndpoints": []}))[0] == 400
    assert (await call(url, "DELETE", f"/V4/AccessToken/{info['accessTokenId']}", authtoken=admin))[0] == 404  # not admin's
    assert (await call(url, "DELETE", f"/V4/AccessToken/{info['accessTokenId']}", authtoken=session)) == (200, {"errorCode": 0, "errorMessage": ""})
    assert (await call(url, "GET", "/Client", bearer=info["accessToken"]))[0] == 401
    assert (await renew(url, info))[0] == 401


async def test_a_service_accounts_ip_allowlist_holds_its_tokens(commvault: tuple[CommvaultAppliance, str]) -> None:
    mock, url = commvault
    info = await create(url, await login(url))
    for entries, expected in ((["10.0.0.0/8"], 403), (["127.0.0.1"], 200), (["127.0.0.1 – 127.0.0.5"], 200),
                              (["127.0.0.2 - 127.0.0.9"], 403), (["2001:db8::/32", "127.0.0.0/24"], 200)):
        mock.set_ip_allowlist("svc-backup", entries)
        status, body = await call(url, "GET", "/Client", bearer=info["accessToken"])
        assert status == expected, entries
    mock.set_ip_allowlist("svc-backup", ["10.1.2.3"])
    assert (await call(url, "GET", "/Client", authtoken=await login(url)))[0] == 200  # a login is not an access token


async def test_behind_a_proxy_the_forwarded_address_is_the_clients(clock: Clock) -> None:
    mock = CommvaultAppliance(trust_forwarded_for=True, clock=clock)
    async with app_on_loopback(mock.app()) as base:
        url = base + BASE
        info = await create(url, await login(url))
        mock.set_ip_allowlist("svc-backup", ["10.1.2.3"])
        assert (await call(url, "GET", "/Client", bearer=info["accessToken"], headers={"X-Forwarded-For": "10.1.2.3"}))[0] == 200
        assert (await call(url, "GET", "/Client", bearer=info["accessToken"], headers={"X-Forwarded-For": "10.9.9.9"}))[0] == 403


async def test_every_request_is_recorded_before_any_check(commvault: tuple[CommvaultAppliance, str]) -> None:
    mock, url = commvault
    await call(url, "GET", "/Client?x=1")
    assert mock.received == [("GET", f"{BASE}/Client?x=1")]


async def test_a_hyperscale_token_reaches_only_the_hyperscale_apis_and_renews(commvault: tuple[CommvaultAppliance, str]) -> None:
    """"Hyperscale: Executes Hyperscale REST APIs." — tokenType 5 (cvpysdk's number), renewable like All and Custom."""
    _, url = commvault
    info = await create(url, await login(url), tokenType=5)
    assert info["tokenType"] == 5 and "refreshToken" in info
    for path in ("/Client", "/V2/Plan", "/MediaAgent", "/ClientGroup"):
        status, body = await call(url, "GET", path, bearer=info["accessToken"])
        assert (status, body["errorMessage"]) == (403, "This access token's scope does not include this API"), path
    status, renewed = await renew(url, info)
    assert status == 200 and renewed["tokenInfo"]["accessToken"] != info["accessToken"]


async def test_an_access_token_may_arrive_in_the_authtoken_header_as_bearer(commvault: tuple[CommvaultAppliance, str]) -> None:
    """Commvault's own SDK sends access tokens as ``Authtoken: Bearer <token>``."""
    _, url = commvault
    info = await create(url, await login(url), tokenType=3, apiEndpoints=["/plans"])
    assert (await call(url, "GET", "/V2/Plan", headers={"Authtoken": f"Bearer {info['accessToken']}"}))[0] == 200
    status, body = await call(url, "GET", "/Client", headers={"Authtoken": f"Bearer {info['accessToken']}"})
    assert (status, body["errorCode"]) == (403, 403)
    assert (await call(url, "GET", "/V2/Plan", headers={"Authtoken": "Bearer nope"}))[0] == 401
