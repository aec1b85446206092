"""Emergency clients over real HTTP: the VCF-style API, and what their tokens reach through labgate."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from proxy.issuer.keys import new_signing_key
from proxy.store.sqlite import SqliteStore
from tests.clock import Clock
from tests.conftest import RecordingUpstream
from tests.gateway.serving import get
from tests.gateway.token_service import ADMIN, ADMIN_HASH, admin_call, basic
from tests.issuer.shipped import (
    ISSUER,
    Labgate,
    move_clocks,
    running_labgate,
    shipped_config,
    vcf_upstream,
)

REALM_CLIENTS = "/vcf/suite-api/api/fleet-management/iam/ssorealms/vcf-sso/emergency-clients"
NEW = {"clientId": "break-glass", "clientName": "Break glass", "clientDescription": "when SSO is down", "accessTokenTtl": 60}


def issuer_with_admin(**overrides: Any) -> dict[str, Any]:
    return {**ISSUER, "key_refresh_interval": 1, "admin": {"username": ADMIN[0], "password_hash": ADMIN_HASH}, **overrides}


@pytest.fixture
async def lab(upstream: RecordingUpstream, tmp_path: Path) -> AsyncIterator[Labgate]:
    async with running_labgate(shipped_config(tmp_path, [vcf_upstream(upstream.url)], issuer=issuer_with_admin())) as running:
        yield running


async def create(lab: Labgate, **fields: Any) -> tuple[int, dict[str, str], Any]:
    return await admin_call(lab.running, "POST", "/emergency-clients", body={**NEW, **fields})


def assert_refused(status: int, body: Any, expected: tuple[int, str]) -> None:
    assert (status, body["reason"]) == expected, body
    assert set(body) == {"error", "error_description", "reason", "request_id"}


# -- the API -------------------------------------------------------------------------------


async def test_create_shows_the_token_once_in_vcfs_shape(lab: Labgate) -> None:
    before = time.time()
    status, headers, body = await create(lab, roles=[{"roleName": "viewer"}])
    assert status == 201 and headers["Cache-Control"] == "no-store"
    token = body.pop("accessToken")
    expires = body.pop("accessTokenExpirationDate")
    assert body == {
        "clientId": "break-glass", "clientName": "Break glass", "clientDescription": "when SSO is down",
        "accessTokenTtl": 60, "accessTokenStatus": "ACTIVE", "roles": [{"roleName": "viewer"}],
        "tokenEndpointUrl": "https://labgate.lab.example/oauth/token", "oidcIssuerUrl": "https://labgate.lab.example",
        "upstream": "vcf", "tokenType": "emergency-client-viewer",
    }
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["sub"], claims["client_id"], claims["aud"], claims["token_type"]) == (
        "break-glass", "break-glass", "vcf", "emergency-client-viewer")
    assert claims["exp"] - claims["iat"] == 3600 and expires == claims["exp"] * 1000
    assert before - 1 <= claims["iat"] <= time.time()

    for path in ("/emergency-clients/break-glass", "/emergency-clients"):
        status, _, shown = await admin_call(lab.running, "GET", path)
        assert status == 200 and token not in str(shown)
        assert all("accessToken" not in client for client in shown.get("emergencyClients", [shown]))
    _, _, listed = await admin_call(lab.running, "GET", "/emergency-clients")
    assert listed == {"emergencyClients": [{**body, "accessTokenExpirationDate": expires}]}


async def test_the_status_turns_expired_when_the_token_runs_out(lab: Labgate) -> None:
    clock = Clock()
    move_clocks(lab, clock)
    await create(lab, accessTokenTtl=1)
    clock.advance(59)
    assert (await admin_call(lab.running, "GET", "/emergency-clients/break-glass"))[2]["accessTokenStatus"] == "ACTIVE"
    clock.advance(1)
    assert (await admin_call(lab.running, "GET", "/emergency-clients/break-glass"))[2]["accessTokenStatus"] == "EXPIRED"


async def test_an_unreadable_record_is_listed_with_an_unknown_status(lab: Labgate) -> None:
    await lab.gateway.store.put_record("emergency-client", "damaged", '{"clientId": 5}')
    status, _, body = await admin_call(lab.running, "GET", "/emergency-clients/damaged")
    assert (status, body) == (200, {"clientId": "damaged", "accessTokenStatus": "UNKNOWN"})
    status, _, _ = await admin_call(lab.running, "DELETE", "/emergency-clients/damaged")
    assert status == 204 and await lab.gateway.store.get_record("emergency-client", "damaged", time.time()) is None
    token = (await create(lab, clientId="damaged"))[2]["accessToken"]  # made again at once: its token lives
    assert (await get(f"{lab.running.url}/vcf/suite-api/api/resources", token))[0] == 200


REFUSED = [
    ("no_client_id", {"clientId": None}, "clientId is required"),
    ("empty_name", {"clientName": ""}, "clientName is required"),
    ("zero_ttl", {"accessTokenTtl": 0}, "from 1 to 43200"),  # issuer.access_token_max_lifetime 30d = 43200 minutes
    ("ttl_too_long", {"accessTokenTtl": 43201}, "issuer.access_token_max_lifetime"),
    ("token_sent", {"accessToken": "eyJ"}, "accessToken is set by labgate"),
    ("unknown_upstream", {"upstream": "commvault"}, "upstream must name an upstream offering emergency clients (vcf)"),
    ("bad_roles", {"roles": [{"roleName": ""}]}, "each role is"),
]


@pytest.mark.parametrize("fields, expected", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
async def test_bad_creates_are_400_with_what_to_send(lab: Labgate, fields: dict[str, Any], expected: str) -> None:
    status, _, body = await create(lab, **fields)
    assert_refused(status, body, (400, "bad_admin_request"))
    assert expected in body["error_description"]
    assert (await admin_call(lab.running, "GET", "/emergency-clients"))[2] == {"emergencyClients": []}


async def test_a_client_id_is_taken_once(lab: Labgate) -> None:
    assert (await create(lab))[0] == 201
    status, _, body = await create(lab, clientName="Another")
    assert_refused(status, body, (409, "already_exists"))
    assert "accessToken" not in str(body)


async def test_simultaneous_creates_of_one_client_id_give_one_client(lab: Labgate) -> None:
    """Both pass the "exists already?" check at once; the store's put-if-absent lets exactly one in."""
    answers = await asyncio.gather(*(create(lab, clientName=f"Creator {n}") for n in range(2)))
    statuses = sorted(status for status, _, _ in answers)
    assert statuses == [201, 409], answers
    (winner,) = [body for status, _, body in answers if status == 201]
    (loser,) = [body for status, _, body in answers if status == 409]
    assert_refused(409, loser, (409, "already_exists"))
    assert "accessToken" not in str(loser)
    _, _, shown = await admin_call(lab.running, "GET", "/emergency-clients/break-glass")
    assert shown["clientName"] == winner["clientName"]
    assert (await get(f"{lab.running.url}/vcf/suite-api/api/resources", winner["accessToken"]))[0] == 200


@pytest.mark.parametrize("method, path", [("GET", "/emergency-clients/nobody"), ("DELETE", "/emergency-clients/nobody"),
                                          ("POST", "/emergency-clients/nobody/regenerate")])
async def test_an_unknown_client_is_404(lab: Labgate, method: str, path: str) -> None:
    status, _, body = await admin_call(lab.running, method, path)
    assert_refused(status, body, (404, "not_found"))


async def test_with_two_upstreams_offering_them_the_create_names_one(upstream: RecordingUpstream, tmp_path: Path) -> None:
    second = {**vcf_upstream(upstream.url), "name": "vcf-b", "path_prefix": "/vcf-b"}
    config = shipped_config(tmp_path, [vcf_upstream(upstream.url), second], issuer=issuer_with_admin())
    async with running_labgate(config) as lab:
        status, _, body = await create(lab)
        assert_refused(status, body, (400, "bad_admin_request"))
        assert "name the upstream in 'upstream' (offering emergency clients: vcf, vcf-b)" in body["error_description"]
        status, _, body = await create(lab, upstream="vcf-b")
        assert (status, body["upstream"]) == (201, "vcf-b")
        assert jwt.decode(body["accessToken"], options={"verify_signature": False})["aud"] == "vcf-b"
        assert (await get(f"{lab.running.url}/vcf-b/suite-api/api/resources", body["accessToken"]))[0] == 200
        assert (await get(f"{lab.running.url}/vcf/suite-api/api/resources", body["accessToken"]))[1]["reason"] == "wrong_audience"


# -- what the tokens reach -------------------------------------------------------------------


@pytest.mark.parametrize(
    "roles, allowed, refused",
    [
        ([], ["/suite-api/api/resources", "/suite-api/api/fleet-management/iam/ssorealms"], [
            ("POST", REALM_CLIENTS, "operation_forbidden"), ("GET", "/vcf/suite-api/internal/x", "prefix_not_allowed")]),
        ([{"roleName": "viewer"}], ["/suite-api/api/resources", "/suite-api/api/alerts/7"], [
            ("GET", "/vcf/suite-api/api/fleet-management/iam/ssorealms", "route_not_allowed"),
            ("POST", REALM_CLIENTS, "method_not_allowed")]),
        (["iam-admin"], ["/suite-api/api/fleet-management/iam/ssorealms"], [
            ("GET", "/vcf/suite-api/api/resources", "prefix_not_allowed"),
            ("DELETE", REALM_CLIENTS + "/other", "operation_forbidden")]),
    ],
    ids=["ceiling", "viewer", "iam-admin"],
)
async def test_a_clients_token_reaches_what_its_roles_allow_and_nothing_else(
    lab: Labgate, upstream: RecordingUpstream, roles: list[Any], allowed: list[str], refused: list[tuple[str, str, str]]
) -> None:
    token = (await create(lab, roles=roles))[2]["accessToken"]
    for path in allowed:
        status, body = await get(f"{lab.running.url}/vcf{path}", token)
        assert (status, body["path"]) == (200, path)
    assert [r.raw_path for r in upstream.received] == allowed
    assert all("authorization" not in r.headers for r in upstream.received)  # labgate's token stays with labgate
    for method, path, reason in refused:
        status, _, body = await through_labgate(lab, method, path, token)
        assert (status, body["reason"]) == (403, reason)
    assert len(upstream.received) == len(allowed)


async def through_labgate(lab: Labgate, method: str, path: str, token: str) -> tuple[int, dict[str, str], Any]:
    """A request through labgate to an upstream (not the management API), with a bearer token."""
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"{lab.running.url}{path}", headers={"Authorization": f"Bearer {token}"}) as answer:
            return answer.status, dict(answer.headers), await answer.json(content_type=None)


async def test_regenerate_kills_the_old_token_on_its_next_request(lab: Labgate, upstream: RecordingUpstream) -> None:
    old = (await create(lab))[2]["accessToken"]
    assert (await get(f"{lab.running.url}/vcf/suite-api/api/resources", old))[0] == 200
    status, headers, body = await admin_call(lab.running, "POST", "/emergency-clients/break-glass/regenerate")
    assert status == 200 and headers["Cache-Control"] == "no-store"
    new = body["accessToken"]
    assert new != old and body["accessTokenStatus"] == "ACTIVE" and body["clientName"] == "Break glass"
    status, refused = await get(f"{lab.running.url}/vcf/suite-api/api/resources", old)
    assert (status, refused["reason"]) == (401, "revoked")
    assert (await get(f"{lab.running.url}/vcf/suite-api/api/resources", new))[0] == 200
    assert len(upstream.received) == 2
    listed = (await admin_call(lab.running, "GET", "/emergency-clients"))[2]
    assert new not in str(listed) and old not in str(listed)


async def test_delete_kills_the_token_and_forgets_the_client(lab: Labgate, upstream: RecordingUpstream) -> None:
    token = (await create(lab))[2]["accessToken"]
    status, _, body = await admin_call(lab.running, "DELETE", "/emergency-clients/break-glass")
    assert (status, body) == (204, None)
    status, refused = await get(f"{lab.running.url}/vcf/suite-api/api/resources", token)
    assert (status, refused["reason"]) == (401, "revoked")
    assert upstream.received == []
    assert (await admin_call(lab.running, "GET", "/emergency-clients/break-glass"))[0] == 404
    assert (await create(lab))[0] == 201  # the id is free again


async def test_the_type_follows_the_config_at_regenerate(lab: Labgate, upstream: RecordingUpstream) -> None:
    token = (await create(lab, roles=["auditor"]))[2]["accessToken"]  # a role naming no group: the ceiling
    assert jwt.decode(token, options={"verify_signature": False})["token_type"] == "emergency-client"
    body = (await admin_call(lab.running, "POST", "/emergency-clients/break-glass/regenerate"))[2]
    assert body["tokenType"] == "emergency-client" and body["roles"] == [{"roleName": "auditor"}]


# -- a token never manages tokens, and no secret leaks ----------------------------------------


@pytest.mark.parametrize(
    "method, path, body",
    [("POST", "/emergency-clients", {**NEW, "clientId": "minted-by-a-token"}), ("GET", "/emergency-clients", None),
     ("GET", "/emergency-clients/break-glass", None), ("POST", "/emergency-clients/break-glass/regenerate", None),
     ("DELETE", "/emergency-clients/break-glass", None)],
    ids=["create", "list", "get", "regenerate", "delete"],
)
async def test_a_labgate_access_token_can_never_manage_emergency_clients(
    lab: Labgate, method: str, path: str, body: Any
) -> None:
    token = (await create(lab))[2]["accessToken"]
    status, _, refused = await admin_call(lab.running, method, path, body=body, authorization=f"Bearer {token}")
    assert_refused(status, refused, (403, "token_management_forbidden"))
    assert token not in str(refused)
    listed = (await admin_call(lab.running, "GET", "/emergency-clients"))[2]["emergencyClients"]
    assert [c["clientId"] for c in listed] == ["break-glass"]
    assert (await get(f"{lab.running.url}/vcf/suite-api/api/resources", token))[0] == 200  # still the same, live token


async def test_no_token_reaches_a_log_line_or_an_error(lab: Labgate, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        first = (await create(lab))[2]["accessToken"]
        second = (await admin_call(lab.running, "POST", "/emergency-clients/break-glass/regenerate"))[2]["accessToken"]
        errors = [(await create(lab))[2], (await get(f"{lab.running.url}/vcf/suite-api/api/resources", first))[1],
                  (await admin_call(lab.running, "GET", "/emergency-clients", authorization=f"Bearer {second}"))[2],
                  (await admin_call(lab.running, "GET", "/emergency-clients", authorization=basic(ADMIN[0], second)))[2]]
        await admin_call(lab.running, "DELETE", "/emergency-clients/break-glass")
    for secret in (first, second, ADMIN[1]):
        assert secret not in caplog.text and secret not in str(errors)


async def test_without_a_usable_signing_key_nothing_is_created(upstream: RecordingUpstream, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "labgate.db")
    await store.add_first_signing_key(new_signing_key("ES256", now=time.time(), passphrase=b"another labgate's passphrase"))
    await store.close()
    (tmp_path / "issuer.passphrase").write_text("this labgate's own passphrase\n")
    issuer = issuer_with_admin(key_passphrase_file="issuer.passphrase")
    config = shipped_config(tmp_path, [vcf_upstream(upstream.url)], issuer=issuer,
                            store={"type": "sqlite", "path": str(tmp_path / "labgate.db")})
    async with running_labgate(config) as lab:
        status, _, body = await create(lab)
        assert_refused(status, body, (503, "keys_unavailable"))
        assert (await admin_call(lab.running, "GET", "/emergency-clients"))[2] == {"emergencyClients": []}
