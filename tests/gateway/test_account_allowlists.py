"""A service account's IP allowlist over real HTTP: set on the account, every token held to it.

Commvault's documentation ('Creating an access token for a service account'):
"To control from which IP addresses the service account must be used to
execute REST APIs, do the following: Go to the IP allowlist section, click Edit."
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RecordingUpstream
from tests.gateway.test_service_accounts import (
    assert_appliance_refused,
    assert_refused,
    call,
    claims,
    create,
    renew,
)
from tests.gateway.token_service import ADMIN, ADMIN_HASH, admin_call
from tests.issuer.shipped import (
    ISSUER,
    Labgate,
    commvault_upstream,
    running_labgate,
    shipped_config,
)

ALLOWLIST = "/service-accounts/svc-backup/ip-allowlist"


@pytest.fixture
async def lab(upstream: RecordingUpstream, tmp_path: Path) -> AsyncIterator[Labgate]:
    issuer = {**ISSUER, "key_refresh_interval": 1, "admin": {"username": ADMIN[0], "password_hash": ADMIN_HASH}}
    config = shipped_config(tmp_path, [commvault_upstream(upstream.url)], issuer=issuer, trusted_proxies=["127.0.0.1"])
    async with running_labgate(config) as running:
        assert (await admin_call(running.running, "POST", "/subjects", body={"name": "svc-backup"}))[0] == 201
        yield running


async def set_allowlist(lab: Labgate, entries: Any) -> tuple[int, Any]:
    status, _, body = await admin_call(lab.running, "PUT", ALLOWLIST, body={"ipAllowlist": entries})
    return status, body


async def test_a_token_made_without_a_list_inherits_the_accounts(lab: Labgate, upstream: RecordingUpstream) -> None:
    assert await set_allowlist(lab, "10.1.1.0 – 10.1.1.25\n2001:db8::/64") == (
        200, {"ipAllowlist": ["10.1.1.0 – 10.1.1.25", "2001:db8::/64"], "revokedTokens": []})
    first = (await create(lab))[1]["tokenInfo"]
    second = (await create(lab, tokenName="second"))[1]["tokenInfo"]
    for info in (first, second):  # "a second token created without a list" is held to the account's list too
        assert claims(info["accessToken"])["client_ips"] == ["10.1.1.0 – 10.1.1.25", "2001:db8::/64"]
        assert (await call(lab, "/Client", info["accessToken"], client_ip="10.1.1.7"))[0] == 200
        assert (await call(lab, "/Client", info["accessToken"], client_ip="2001:db8::9"))[0] == 200
        assert_appliance_refused(*await call(lab, "/Client", info["accessToken"], client_ip="10.1.1.26"), (403, "client_ip_not_allowed"))
    assert len(upstream.received) == 4
    status, renewed = await renew(lab, first["refreshToken"])
    assert status == 200 and claims(renewed["access_token"])["client_ips"] == ["10.1.1.0 – 10.1.1.25", "2001:db8::/64"]
    assert (await admin_call(lab.running, "GET", ALLOWLIST))[2] == {"ipAllowlist": ["10.1.1.0 – 10.1.1.25", "2001:db8::/64"]}


async def test_a_tokens_own_list_can_only_narrow_the_accounts(lab: Labgate) -> None:
    await set_allowlist(lab, ["10.1.1.0/24"])
    narrow = (await create(lab, ipAllowlist=["10.1.1.5", "10.1.1.8 - 10.1.1.9"]))[1]["tokenInfo"]
    assert claims(narrow["accessToken"])["client_ips"] == ["10.1.1.5", "10.1.1.8 - 10.1.1.9"]
    assert_appliance_refused(*await call(lab, "/Client", narrow["accessToken"], client_ip="10.1.1.6"), (403, "client_ip_not_allowed"))
    for wider in (["10.1.0.0/16"], ["10.1.1.5", "10.1.2.1"], ["10.1.1.200 – 10.1.2.3"], ["::ffff:10.1.2.1"]):
        status, body = await create(lab, ipAllowlist=wider)
        assert_refused(status, body, (400, "bad_admin_request"))
        assert "not inside the service account's IP allowlist" in body["error_description"]


async def test_changing_the_list_revokes_the_tokens_it_no_longer_admits(lab: Labgate) -> None:
    unrestricted = (await create(lab))[1]["tokenInfo"]
    inside = (await create(lab, tokenName="inside", ipAllowlist=["10.1.1.5"]))[1]["tokenInfo"]
    outside = (await create(lab, tokenName="outside", ipAllowlist=["192.0.2.1"]))[1]["tokenInfo"]
    status, body = await set_allowlist(lab, ["10.1.1.0/24"])
    assert status == 200 and sorted(body["revokedTokens"]) == sorted([unrestricted["accessTokenId"], outside["accessTokenId"]])
    assert (await call(lab, "/Client", inside["accessToken"], client_ip="10.1.1.5"))[0] == 200
    assert_appliance_refused(*await call(lab, "/Client", unrestricted["accessToken"], client_ip="10.1.1.5"), (401, "revoked"))
    assert_appliance_refused(*await call(lab, "/Client", outside["accessToken"], client_ip="192.0.2.1"), (401, "revoked"))
    assert (await renew(lab, unrestricted["refreshToken"]))[0] == 400
    listed = (await admin_call(lab.running, "GET", "/service-accounts/svc-backup/tokens"))[2]["accessTokens"]
    assert [t["accessTokenId"] for t in listed] == [inside["accessTokenId"]]


async def test_lifting_the_list_leaves_tokens_with_theirs(lab: Labgate) -> None:
    await set_allowlist(lab, ["10.1.1.0/24"])
    info = (await create(lab))[1]["tokenInfo"]
    assert (await admin_call(lab.running, "DELETE", ALLOWLIST))[0] == 204
    assert (await admin_call(lab.running, "GET", ALLOWLIST))[2] == {"ipAllowlist": []}
    assert_appliance_refused(*await call(lab, "/Client", info["accessToken"], client_ip="192.0.2.1"), (403, "client_ip_not_allowed"))
    assert "client_ips" not in claims((await create(lab, tokenName="free"))[1]["tokenInfo"]["accessToken"])
    assert (await admin_call(lab.running, "DELETE", ALLOWLIST))[0] == 404


@pytest.mark.parametrize(
    "body, expected",
    [({"ipAllowlist": []}, "at least one entry"), ({"ipAllowlist": ["10.0.0.300"]}, "ipAllowlist entry 1"),
     ({"ipAllowlist": ["10.0.0.1"], "extra": 1}, "extra"), ({}, "ipAllowlist")],
    ids=["empty", "bad-address", "unknown-field", "missing"],
)
async def test_a_bad_allowlist_is_400_and_changes_nothing(lab: Labgate, body: dict[str, Any], expected: str) -> None:
    info = (await create(lab))[1]["tokenInfo"]
    status, _, answer = await admin_call(lab.running, "PUT", ALLOWLIST, body=body)
    assert_refused(status, answer, (400, "bad_admin_request"))
    assert expected in answer["error_description"]
    assert (await call(lab, "/Client", info["accessToken"], client_ip="192.0.2.1"))[0] == 200
    assert (await admin_call(lab.running, "GET", ALLOWLIST))[2] == {"ipAllowlist": []}


async def test_an_unknown_account_has_no_allowlist_and_deleting_an_account_drops_it(lab: Labgate) -> None:
    status, _, body = await admin_call(lab.running, "PUT", "/service-accounts/nobody/ip-allowlist", body={"ipAllowlist": ["10.0.0.1"]})
    assert_refused(status, body, (404, "not_found"))
    await set_allowlist(lab, ["10.0.0.1"])
    assert (await admin_call(lab.running, "DELETE", "/subjects/svc-backup"))[0] == 204
    assert (await admin_call(lab.running, "POST", "/subjects", body={"name": "svc-backup"}))[0] == 201
    assert (await admin_call(lab.running, "GET", ALLOWLIST))[2] == {"ipAllowlist": []}
