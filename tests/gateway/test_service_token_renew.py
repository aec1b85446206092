"""Commvault's "Refresh token API" (POST /V4/AccessToken/Renew) for labgate's own service-account tokens.

Commvault's documentation: "after thirty minutes, use the Refresh token API"
with the access and the refresh token; reusing an old pair kills the chain.
The appliance never saw labgate's tokens, so labgate answers the call itself:
nothing reaches the appliance, whatever the answer.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import RecordingUpstream
from tests.gateway.test_service_accounts import assert_appliance_refused, call, create
from tests.gateway.token_service import ADMIN, ADMIN_HASH, admin_call
from tests.issuer.shipped import ISSUER, Labgate, commvault_upstream, running_labgate, shipped_config, vcf_upstream

RENEW = "/commvault/V4/AccessToken/Renew"


@pytest.fixture
async def lab(upstream: RecordingUpstream, tmp_path: Path) -> AsyncIterator[Labgate]:
    issuer = {**ISSUER, "admin": {"username": ADMIN[0], "password_hash": ADMIN_HASH}}
    upstreams = [commvault_upstream(upstream.url), vcf_upstream(upstream.url)]
    async with running_labgate(shipped_config(tmp_path, upstreams, issuer=issuer, trusted_proxies=["127.0.0.1"])) as running:
        assert (await admin_call(running.running, "POST", "/subjects", body={"name": "svc-backup"}))[0] == 201
        yield running


async def renew_call(
    lab: Labgate, body: bytes | dict[str, Any], *, path: str = RENEW, headers: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, str]]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {"Content-Type": "application/json", **(headers or {})}
    async with aiohttp.ClientSession() as session:
        async with session.post(lab.running.url + path, data=data, headers=sent) as answer:
            return answer.status, await answer.json(content_type=None), dict(answer.headers)


async def new_token(lab: Labgate, **fields: Any) -> dict[str, Any]:
    status, body = await create(lab, **fields)
    assert status == 201, body
    return dict(body["tokenInfo"])


def pair(info: dict[str, Any]) -> dict[str, str]:
    return {"accessToken": info["accessToken"], "refreshToken": info["refreshToken"]}


async def test_renew_answers_a_new_pair_and_reaches_no_appliance(lab: Labgate, upstream: RecordingUpstream) -> None:
    created = await new_token(lab)
    status, body, headers = await renew_call(lab, pair(created))
    assert status == 200, body
    info = body["tokenInfo"]
    assert info["accessTokenId"] == created["accessTokenId"] and info["tokenName"] == "backup"
    assert info["accessToken"] != created["accessToken"] and info["refreshToken"] != created["refreshToken"]
    assert headers["Cache-Control"] == "no-store"
    assert upstream.received == []  # answered by labgate: the appliance never saw the call
    assert (await call(lab, "/Client", info["accessToken"]))[0] == 200
    assert [r.raw_path for r in upstream.received] == ["/Client"]


@pytest.mark.parametrize("path", ["/commvault/v4/accesstoken/renew", "/commvault//V4/AccessToken/Renew"])
async def test_renew_in_the_spellings_commvaults_sdk_and_documentation_use(lab: Labgate, path: str) -> None:
    """Paths are case-insensitive on Commvault, and its SDK writes this one as '<base>/' + '/V4/AccessToken/Renew'."""
    status, body, _ = await renew_call(lab, pair(await new_token(lab)), path=path)
    assert status == 200, body


async def test_a_header_token_is_neither_needed_nor_forwarded(lab: Labgate, upstream: RecordingUpstream) -> None:
    created = await new_token(lab)
    status, _, _ = await renew_call(lab, pair(created), headers={"Authtoken": "Bearer not-a-token"})
    assert status == 200
    assert upstream.received == []


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"not json",
        b"[]",
        b'{"accessToken": "a"}',
        b'{"accessToken": "a", "refreshToken": "b", "tokenName": "x"}',
        b'{"accessToken": "a", "refreshToken": "b", "refreshToken": "c"}',
        b'{"accessToken": 1, "refreshToken": "b"}',
        b'{"accessToken": "", "refreshToken": "b"}',
    ],
    ids=["empty", "not-json", "array", "missing", "extra", "duplicate", "number", "empty-string"],
)
async def test_a_body_that_is_not_the_pair_is_400(lab: Labgate, upstream: RecordingUpstream, body: bytes) -> None:
    assert_appliance_refused(*(await renew_call(lab, body))[:2], (400, "bad_token_request"))
    assert upstream.received == []


async def test_a_body_too_large_is_413(lab: Labgate, upstream: RecordingUpstream) -> None:
    status, body, _ = await renew_call(lab, {"accessToken": "a" * 70000, "refreshToken": "b"})
    assert_appliance_refused(status, body, (413, "body_too_large"))
    assert upstream.received == []


async def test_an_unknown_refresh_token_is_invalid_grant(lab: Labgate) -> None:
    created = await new_token(lab)
    status, body, _ = await renew_call(lab, {"accessToken": created["accessToken"], "refreshToken": "unknown"})
    assert_appliance_refused(status, body, (400, "invalid_grant"))
    assert created["accessToken"] not in json.dumps(body)


async def test_the_access_token_must_be_the_one_issued_with_the_refresh_token(lab: Labgate) -> None:
    first, second = await new_token(lab), await new_token(lab)
    mixed = {"accessToken": second["accessToken"], "refreshToken": first["refreshToken"]}
    assert_appliance_refused(*(await renew_call(lab, mixed))[:2], (400, "invalid_grant"))
    # The refresh token was not spent by the refused call: its own pair still renews.
    assert (await renew_call(lab, pair(first)))[0] == 200


async def test_reusing_an_old_pair_kills_the_whole_chain(lab: Labgate) -> None:
    """Commvault's rule: an old access/refresh pair presented again invalidates every token of the chain."""
    created = await new_token(lab)
    status, renewed, _ = await renew_call(lab, pair(created))
    assert status == 200
    newest = renewed["tokenInfo"]
    assert_appliance_refused(*(await renew_call(lab, pair(created)))[:2], (400, "refresh_token_reused"))
    assert_appliance_refused(*await call(lab, "/Client", newest["accessToken"]), (401, "revoked"))
    assert_appliance_refused(*(await renew_call(lab, pair(newest)))[:2], (400, "invalid_grant"))


async def test_a_custom_token_renews_only_if_its_entries_open_the_renew_call(lab: Labgate, upstream: RecordingUpstream) -> None:
    plans = await new_token(lab, scope="Custom", apiEndpoints=["/plans"])
    assert_appliance_refused(*(await renew_call(lab, pair(plans)))[:2], (403, "prefix_not_allowed"))
    renewable = await new_token(lab, scope="Custom", apiEndpoints=["/plans", "/V4/AccessToken/Renew"])
    assert (await renew_call(lab, pair(renewable)))[0] == 200
    assert upstream.received == []


async def test_the_service_accounts_ip_allowlist_holds_for_renewing(lab: Labgate) -> None:
    created = await new_token(lab, ipAllowlist=["10.1.1.1"])
    outside = await renew_call(lab, pair(created), headers={"X-Forwarded-For": "10.1.1.2"})
    assert_appliance_refused(*outside[:2], (403, "client_ip_not_allowed"))
    assert (await renew_call(lab, pair(created), headers={"X-Forwarded-For": "10.1.1.1"}))[0] == 200


async def test_a_token_that_is_not_renewable_has_nothing_to_renew(lab: Labgate) -> None:
    one_touch = await new_token(lab, scope="1-Touch recovery")
    assert "refreshToken" not in one_touch
    body = {"accessToken": one_touch["accessToken"], "refreshToken": one_touch["accessToken"]}
    assert_appliance_refused(*(await renew_call(lab, body))[:2], (400, "invalid_grant"))


async def test_repeated_slashes_are_merged_only_where_the_pack_says_the_appliance_merges(
    lab: Labgate, upstream: RecordingUpstream
) -> None:
    token = (await new_token(lab))["accessToken"]
    assert (await call(lab, "//Client//7", token))[0] == 200
    assert [r.raw_path for r in upstream.received] == ["/Client/7"]  # forwarded as decided: merged
    async with aiohttp.ClientSession() as session:
        async with session.get(lab.running.url + "/vcf//v1/domains", headers={"Authorization": f"Bearer {token}"}) as answer:
            status, body = answer.status, await answer.json()
    assert (status, body["reason"]) == (400, "ambiguous_path")
    assert set(body) == {"error", "error_description", "reason", "request_id"}  # labgate's own shape on vcf
    assert [r.raw_path for r in upstream.received] == ["/Client/7"]
