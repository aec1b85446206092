"""Service-account tokens over real HTTP: the Commvault-style API, renewal, and what the tokens reach."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from tests.clock import Clock
from tests.conftest import RecordingUpstream
from tests.gateway.token_service import ADMIN, ADMIN_HASH, admin_call
from tests.issuer.shipped import (
    ISSUER,
    Labgate,
    commvault_upstream,
    move_clocks,
    running_labgate,
    shipped_config,
)

DAY = 86400
ONE_TOUCH = ["/Client", "/MediaAgent", "/ClientGroup", "/V4/ServerGroup", "/FirewallSummary"]
ACCOUNT = "/service-accounts/svc-backup/tokens"


@pytest.fixture
async def lab(upstream: RecordingUpstream, tmp_path: Path) -> AsyncIterator[Labgate]:
    issuer = {**ISSUER, "key_refresh_interval": 1, "admin": {"username": ADMIN[0], "password_hash": ADMIN_HASH}}
    config = shipped_config(tmp_path, [commvault_upstream(upstream.url)], issuer=issuer, trusted_proxies=["127.0.0.1"])
    async with running_labgate(config) as running:
        assert (await admin_call(running.running, "POST", "/subjects", body={"name": "svc-backup"}))[0] == 201
        yield running


async def create(lab: Labgate, **fields: Any) -> tuple[int, Any]:
    status, _, body = await admin_call(lab.running, "POST", ACCOUNT, body={"tokenName": "backup", **fields})
    return status, body


async def call(lab: Labgate, path: str, token: str, *, client_ip: str | None = None, method: str = "GET") -> tuple[int, Any]:
    """A request through labgate to the commvault upstream; ``client_ip`` comes from the trusted loopback peer."""
    headers = {"Authorization": f"Bearer {token}"}
    if client_ip is not None:
        headers["X-Forwarded-For"] = client_ip
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"{lab.running.url}/commvault{path}", headers=headers) as answer:
            return answer.status, await answer.json(content_type=None)


async def renew(lab: Labgate, refresh_token: str) -> tuple[int, Any]:
    """Commvault's "refresh token API", through labgate's token endpoint."""
    form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{lab.running.url}/oauth/token", data=form) as answer:
            return answer.status, await answer.json(content_type=None)


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def assert_refused(status: int, body: Any, expected: tuple[int, str]) -> None:
    """labgate's own refusal (management API, token endpoint)."""
    assert (status, body["reason"]) == expected, body
    assert set(body) == {"error", "error_description", "reason", "request_id"}


def assert_appliance_refused(status: int, body: Any, expected: tuple[int, str]) -> None:
    """A refusal of a call to the commvault upstream: in Commvault's own error body (the pack's error_format)."""
    assert (status, body["reason"]) == expected, body
    assert set(body) == {"errorCode", "errorMessage", "reason", "request_id"}
    assert body["errorCode"] == status


# -- the API -------------------------------------------------------------------------------


async def test_an_all_token_comes_with_a_refresh_token_shown_once(lab: Labgate) -> None:
    before = int(time.time())
    status, body = await create(lab)
    assert status == 201
    info = body["tokenInfo"]
    access, refresh = info.pop("accessToken"), info.pop("refreshToken")
    created = info.pop("createdTimestamp")
    assert before <= created <= time.time()
    assert info == {
        "accessTokenId": info["accessTokenId"], "tokenName": "backup", "scope": "All", "userId": "svc-backup",
        "upstream": "commvault", "tokenType": "all", "tokenExpiryTimestamp": claims(access)["exp"],
        "renewableUntilTimestamp": info["renewableUntilTimestamp"], "refreshTokenExpiryTimestamp": info["renewableUntilTimestamp"],
    }
    assert abs(info["renewableUntilTimestamp"] - (created + 90 * DAY)) <= 1
    token = claims(access)
    assert (token["sub"], token["client_id"], token["token_type"], token["aud"]) == ("svc-backup", info["accessTokenId"], "all", "commvault")
    assert token["exp"] - token["iat"] == 1800 and "path_prefixes" not in token and "client_ips" not in token
    _, _, listed = await admin_call(lab.running, "GET", ACCOUNT)
    assert access not in str(listed) and refresh not in str(listed)
    assert [t["accessTokenId"] for t in listed["accessTokens"]] == [info["accessTokenId"]]
    assert {"accessToken", "refreshToken"}.isdisjoint(listed["accessTokens"][0])


@pytest.mark.parametrize("scope, lifetime", [("1-Touch recovery", 7 * DAY), ("Microsoft SCIM", 30 * DAY)])
async def test_one_touch_and_scim_tokens_have_no_refresh_token(lab: Labgate, scope: str, lifetime: int) -> None:
    status, body = await create(lab, scope=scope)
    info = body["tokenInfo"]
    assert status == 201 and "refreshToken" not in info and "renewableUntilTimestamp" not in info
    token = claims(info["accessToken"])
    assert token["exp"] - token["iat"] == lifetime == info["tokenExpiryTimestamp"] - token["iat"]
    assert token.get("path_prefixes") == (ONE_TOUCH if scope == "1-Touch recovery" else None)


REFUSED = [
    ("custom_without_endpoints", {"scope": "Custom"}, "the Custom scope needs apiEndpoints"),
    ("bad_address", {"ipAllowlist": ["10.0.0.1", "10.0.0.300"]}, "ipAllowlist entry 2"),
    ("renew_forever", {"renewableUntilTimestamp": 0}, "renewableUntilTimestamp must be a time"),
    ("renew_too_long", {"renewableUntilTimestamp": int(time.time()) + 91 * DAY}, "at most 90 days from now"),
    ("scim_renewable", {"scope": "Microsoft SCIM", "renewableUntilTimestamp": int(time.time()) + DAY}, "not renewable"),
    ("token_sent", {"refreshToken": "x"}, "refreshToken is set by labgate"),
    ("other_upstream", {"upstream": "vcf"}, "upstream must name an upstream offering service-account tokens (commvault)"),
]


@pytest.mark.parametrize("fields, expected", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
async def test_bad_creates_are_400_with_what_to_send(lab: Labgate, fields: dict[str, Any], expected: str) -> None:
    status, body = await create(lab, **fields)
    assert_refused(status, body, (400, "bad_admin_request"))
    assert expected in body["error_description"]
    assert (await admin_call(lab.running, "GET", ACCOUNT))[2] == {"accessTokens": []}


@pytest.mark.parametrize("method, path", [("POST", "/service-accounts/nobody/tokens"), ("GET", "/service-accounts/nobody/tokens"),
                                          ("DELETE", f"{ACCOUNT}/0123456789abcdef")])
async def test_an_unknown_account_or_token_is_404(lab: Labgate, method: str, path: str) -> None:
    status, _, body = await admin_call(lab.running, method, path, body={"tokenName": "t"} if method == "POST" else None)
    assert_refused(status, body, (404, "not_found"))


async def test_a_token_is_revoked_only_under_its_own_account(lab: Labgate) -> None:
    token_id = (await create(lab))[1]["tokenInfo"]["accessTokenId"]
    assert (await admin_call(lab.running, "POST", "/subjects", body={"name": "svc-other"}))[0] == 201
    status, _, body = await admin_call(lab.running, "DELETE", f"/service-accounts/svc-other/tokens/{token_id}")
    assert_refused(status, body, (404, "not_found"))
    assert (await admin_call(lab.running, "GET", "/service-accounts/svc-other/tokens"))[2] == {"accessTokens": []}


# -- what the tokens reach -------------------------------------------------------------------


async def test_a_custom_token_reaches_only_its_endpoints(lab: Labgate, upstream: RecordingUpstream) -> None:
    token = (await create(lab, scope="Custom", apiEndpoints="/Client\n/V2/Plan\n"))[1]["tokenInfo"]["accessToken"]
    for path in ("/Client", "/client/5", "/V2/Plan"):
        assert await call(lab, path, token) == (200, {"path": path, "received_bytes": 0})
    for path, reason in (("/Job/1", "prefix_not_allowed"), ("/MediaAgent", "prefix_not_allowed"),
                         ("/V4/AccessToken/7", "operation_forbidden")):
        status, body = await call(lab, path, token)
        assert (status, body["reason"]) == (403, reason)
    assert [r.raw_path for r in upstream.received] == ["/Client", "/client/5", "/V2/Plan"]


async def test_a_one_touch_token_reaches_exactly_its_five_apis(lab: Labgate) -> None:
    token = (await create(lab, scope="1-Touch recovery"))[1]["tokenInfo"]["accessToken"]
    for path in ONE_TOUCH:
        assert (await call(lab, path, token))[0] == 200
    for path in ("/V2/Plan", "/ClientGroupX", "/V4/AccessToken/7/Renew"):
        assert (await call(lab, path, token, method="POST" if path.endswith("Renew") else "GET"))[0] == 403


async def test_the_ip_allowlist_admits_only_its_addresses(lab: Labgate, upstream: RecordingUpstream) -> None:
    allowlist = ["10.1.1.0 – 10.1.1.25", "2001:db8::1 - 2001:db8::ffff", "192.0.2.0/24", "198.51.100.7"]
    token = (await create(lab, ipAllowlist=allowlist))[1]["tokenInfo"]["accessToken"]
    assert claims(token)["client_ips"] == allowlist
    for address in ("10.1.1.0", "10.1.1.25", "2001:db8::5", "192.0.2.200", "198.51.100.7", "::ffff:10.1.1.3"):
        assert (await call(lab, "/Client", token, client_ip=address))[0] == 200, address
    outside: tuple[str | None, ...] = ("10.1.1.26", "2001:db8::1:0", "198.51.100.8", None)  # None: the loopback peer
    for refused in outside:
        status, body = await call(lab, "/Client", token, client_ip=refused)
        assert (status, body["reason"]) == (403, "client_ip_not_allowed"), refused
    assert len(upstream.received) == 6


# -- renewal -------------------------------------------------------------------------------


async def test_a_renewed_token_keeps_its_scope_endpoints_allowlist_and_renew_until(lab: Labgate) -> None:
    until = int(time.time()) + 10 * DAY
    info = (await create(lab, scope="Custom", apiEndpoints=["/ClientGroup"], ipAllowlist=["10.1.1.0/24"],
                         renewableUntilTimestamp=until))[1]["tokenInfo"]
    status, renewed = await renew(lab, info["refreshToken"])
    assert status == 200 and renewed["token_type"] == "Bearer" and renewed["expires_in"] == 1800
    first, second = claims(info["accessToken"]), claims(renewed["access_token"])
    for claim in ("sub", "client_id", "aud", "token_type", "path_prefixes", "client_ips", "chain"):
        assert first[claim] == second[claim], claim
    assert (second["path_prefixes"], second["client_ips"]) == (["/ClientGroup"], ["10.1.1.0/24"])
    assert (await call(lab, "/ClientGroup", renewed["access_token"], client_ip="10.1.1.9"))[0] == 200
    assert (await call(lab, "/Client", renewed["access_token"], client_ip="10.1.1.9"))[1]["reason"] == "prefix_not_allowed"
    assert renewed["refresh_token"] != info["refreshToken"]


async def test_renewal_works_until_renew_until_and_not_after(lab: Labgate) -> None:
    clock = Clock()
    move_clocks(lab, clock)
    info = (await create(lab, renewableUntilTimestamp=int(clock.now) + 3600))[1]["tokenInfo"]
    refresh = info["refreshToken"]
    for _ in range(3):
        clock.advance(1199)
        status, renewed = await renew(lab, refresh)
        assert status == 200, renewed
        refresh = renewed["refresh_token"]
    clock.advance(int(info["renewableUntilTimestamp"]) - clock.now)
    status, body = await renew(lab, refresh)
    assert_refused(status, body, (400, "renewal_ended"))


async def test_reusing_an_old_pair_kills_the_whole_chain(lab: Labgate, upstream: RecordingUpstream) -> None:
    info = (await create(lab))[1]["tokenInfo"]
    _, renewed = await renew(lab, info["refreshToken"])
    assert (await call(lab, "/Client", renewed["access_token"]))[0] == 200
    status, body = await renew(lab, info["refreshToken"])  # the old pair comes back: someone else holds it
    assert_refused(status, body, (400, "refresh_token_reused"))
    for token in (info["accessToken"], renewed["access_token"]):
        status, refused = await call(lab, "/Client", token)
        assert (status, refused["reason"]) == (401, "revoked")
    status, body = await renew(lab, renewed["refresh_token"])
    assert_refused(status, body, (400, "invalid_grant"))
    assert len(upstream.received) == 1


async def test_revoking_kills_every_token_of_it_and_its_renewal(lab: Labgate, upstream: RecordingUpstream) -> None:
    info = (await create(lab))[1]["tokenInfo"]
    _, renewed = await renew(lab, info["refreshToken"])
    other = (await create(lab, tokenName="other", scope="Microsoft SCIM"))[1]["tokenInfo"]
    status, _, body = await admin_call(lab.running, "DELETE", f"{ACCOUNT}/{info['accessTokenId']}")
    assert (status, body) == (204, None)
    for token in (info["accessToken"], renewed["access_token"]):
        assert (await call(lab, "/Client", token))[1]["reason"] == "revoked"
    assert_refused(*await renew(lab, renewed["refresh_token"]), (400, "invalid_grant"))
    assert (await call(lab, "/scim/Users", other["accessToken"]))[0] == 200  # the account's other token lives on
    listed = (await admin_call(lab.running, "GET", ACCOUNT))[2]["accessTokens"]
    assert [t["accessTokenId"] for t in listed] == [other["accessTokenId"]]
    status, _, _ = await admin_call(lab.running, "DELETE", f"{ACCOUNT}/{other['accessTokenId']}")
    assert status == 204 and (await call(lab, "/scim/Users", other["accessToken"]))[1]["reason"] == "revoked"
    assert len(upstream.received) == 1


async def test_deleting_the_account_kills_its_tokens(lab: Labgate) -> None:
    info = (await create(lab))[1]["tokenInfo"]
    assert (await admin_call(lab.running, "DELETE", "/subjects/svc-backup"))[0] == 204
    assert (await call(lab, "/Client", info["accessToken"]))[1]["reason"] == "revoked"
    assert_refused(*await renew(lab, info["refreshToken"]), (400, "invalid_grant"))


# -- a token never manages tokens, and no secret leaks ----------------------------------------


@pytest.mark.parametrize("method, suffix", [("POST", ""), ("GET", ""), ("DELETE", "/{id}")], ids=["create", "list", "delete"])
async def test_a_labgate_access_token_can_never_manage_access_tokens(lab: Labgate, method: str, suffix: str) -> None:
    info = (await create(lab))[1]["tokenInfo"]
    path = ACCOUNT + suffix.format(id=info["accessTokenId"])
    body = {"tokenName": "minted-by-a-token"} if method == "POST" else None
    status, _, refused = await admin_call(lab.running, method, path, body=body, authorization=f"Bearer {info['accessToken']}")
    assert_refused(status, refused, (403, "token_management_forbidden"))
    listed = (await admin_call(lab.running, "GET", ACCOUNT))[2]["accessTokens"]
    assert [t["tokenName"] for t in listed] == ["backup"]
    assert (await call(lab, "/Client", info["accessToken"]))[0] == 200


async def test_no_token_reaches_a_log_line_a_list_or_an_error(lab: Labgate, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        info = (await create(lab, ipAllowlist=["10.9.9.9"]))[1]["tokenInfo"]
        _, renewed = await renew(lab, info["refreshToken"])
        answers = [
            (await admin_call(lab.running, "GET", ACCOUNT))[2],
            (await call(lab, "/Client", renewed["access_token"]))[1],
            (await renew(lab, info["refreshToken"]))[1],
            (await admin_call(lab.running, "GET", ACCOUNT, authorization=f"Bearer {renewed['access_token']}"))[2],
            (await create(lab, scope="Custom"))[1],
        ]
        await admin_call(lab.running, "DELETE", f"{ACCOUNT}/{info['accessTokenId']}")
    secrets = (info["accessToken"], info["refreshToken"], renewed["access_token"], renewed["refresh_token"], ADMIN[1])
    for secret in secrets:
        assert secret not in caplog.text and secret not in str(answers)
