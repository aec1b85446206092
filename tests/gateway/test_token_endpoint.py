"""labgate's own token endpoint over real HTTP, with an appliance that records what reached it.

Every grant's success, each RFC 6749 section 5.2 error, tokens held to their
type at the appliance, refresh rotation and reuse, and revocations from the
management API that kill live tokens on their next request.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import pytest

from tests.conftest import GatewayStarter, RecordingUpstream, RunningGateway, free_port
from tests.gateway.token_service import (
    ADMIN,
    EMERGENCY,
    GRANTS,
    ISSUER_SOURCE,
    admin_call,
    api_get,
    basic,
    issuer_section,
    start_token_service,
    token_call,
)

PASSWORD = "alice's password"


@pytest.fixture
async def running(start_gateway: GatewayStarter, upstream: RecordingUpstream, tmp_path: Path) -> RunningGateway:
    """On both upstream transports: the tokens it issues must work end to end on either."""
    return await start_token_service(start_gateway, tmp_path, upstream.url, source=ISSUER_SOURCE)


async def add_alice(running: RunningGateway) -> None:
    assert (await admin_call(running, "POST", "/subjects", body={"name": "alice", "password": PASSWORD}))[0] == 201


async def add_client(running: RunningGateway, **extra: str) -> tuple[str, str]:
    status, _, body = await admin_call(running, "POST", "/clients", body={"name": "backup job", "subject": "alice", **extra})
    assert status == 201
    return body["client_id"], body["client_secret"]


def claims(token: str) -> dict[str, Any]:
    return jwt.decode(token, options={"verify_signature": False})


def assert_oauth_error(status: int, headers: dict[str, str], body: dict[str, Any], expected: tuple[int, str, str]) -> None:
    assert (status, body["error"], body["reason"]) == expected, body
    assert set(body) == {"error", "error_description", "reason", "request_id"}
    assert (headers["Cache-Control"], headers["Pragma"]) == ("no-store", "no-cache")


# -- the grants ----------------------------------------------------------------


async def test_password_grant_issues_a_refreshable_token_the_appliance_accepts_within_its_type(
    running: RunningGateway, upstream: RecordingUpstream
) -> None:
    await add_alice(running)
    status, headers, body = await token_call(running, {"grant_type": "password", "username": "alice", "password": PASSWORD})
    assert status == 200 and (headers["Cache-Control"], headers["Pragma"]) == ("no-store", "no-cache")
    assert set(body) == {"access_token", "token_type", "expires_in", "scope", "refresh_token"}
    assert (body["token_type"], body["expires_in"], body["scope"]) == ("Bearer", 900, "operator")  # the type's ttl: 15m
    said = claims(body["access_token"])
    assert (said["sub"], said["aud"], said["token_type"], said["client_id"]) == ("alice", "demo", "operator", "public")
    assert "chain" in said
    assert (await api_get(running, "/demo/api/hosts", body["access_token"]))[0] == 200
    status, refused = await api_get(running, "/demo/other", body["access_token"])
    assert (status, refused["reason"]) == (403, "prefix_not_allowed")  # held to its type
    assert len(upstream.received) == 1
    assert "authorization" not in upstream.received[0].headers  # labgate's token is labgate's, never the appliance's


async def test_client_credentials_by_basic_or_in_the_body_give_a_token_for_the_clients_subject(running: RunningGateway) -> None:
    await add_alice(running)
    client_id, secret = await add_client(running)
    for authorization, form in (
        (basic(client_id, secret), {"grant_type": "client_credentials"}),
        (None, {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}),
    ):
        status, _, body = await token_call(running, form, authorization=authorization)
        assert status == 200 and set(body) == {"access_token", "token_type", "expires_in", "scope"}  # never a refresh token
        assert body["expires_in"] == 7200 and body["scope"] == "api-client"
        said = claims(body["access_token"])
        assert (said["sub"], said["client_id"], said["token_type"]) == ("alice", client_id, "api-client")
        assert (await api_get(running, "/demo/api/hosts", body["access_token"]))[0] == 200
        assert (await api_get(running, "/demo/api/hosts/1", body["access_token"]))[1]["reason"] == "route_not_allowed"


async def test_emergency_grant_simplivity_style(running: RunningGateway) -> None:
    form = {"grant_type": "emergency", "username": EMERGENCY[0], "password": EMERGENCY[1]}
    status, _, body = await token_call(running, form, authorization=basic("simplivity", ""))
    assert status == 200 and "refresh_token" not in body  # the emergency type is not refreshable
    assert body["expires_in"] == 86400  # SimpliVity: "after 24 hours even with continuous activity" (idle: per request)
    said = claims(body["access_token"])
    assert (said["sub"], said["client_id"], said["token_type"]) == ("svtcli", "simplivity", "emergency")
    assert (await api_get(running, "/demo/api/hosts", body["access_token"]))[0] == 200
    for wrong in ({**form, "password": "guess"}, {**form, "username": "root"}, {**form, "username": "alice", "password": PASSWORD}):
        status, headers, refused = await token_call(running, wrong, authorization=basic("simplivity", ""))
        assert_oauth_error(status, headers, refused, (400, "invalid_grant", "invalid_grant"))
        assert refused["error_description"] == "Invalid credentials"


# -- RFC 6749 section 5.2 errors -------------------------------------------------


async def test_wrong_passwords_and_unknown_users_are_indistinguishable(running: RunningGateway) -> None:
    await add_alice(running)
    assert (await admin_call(running, "POST", "/subjects", body={"name": "svc"}))[0] == 201  # no password: no password grant
    for username, password in (("alice", "wrong"), ("nobody", PASSWORD), ("svc", ""), ("svc", "x"), ("a b", "x")):
        status, headers, body = await token_call(running, {"grant_type": "password", "username": username, "password": password})
        if password == "":
            assert_oauth_error(status, headers, body, (400, "invalid_request", "bad_token_request"))  # empty means absent
            continue
        assert_oauth_error(status, headers, body, (400, "invalid_grant", "invalid_grant"))
        assert body["error_description"] == "Invalid credentials"


@pytest.mark.parametrize(
    "form, authorization, content_type",
    [
        (b"grant_type=password&grant_type=client_credentials", None, None),
        (b"username=alice&password=x", None, None),
        (b"grant_type=password&username=alice", None, None),
        (b'{"grant_type": "password"}', None, "application/json"),
        (b"grant_type=password&username=alice&password=x&client_id=a&client_secret=b", basic("a", "b"), None),
        (b"grant_type=password&username=alice&password=x&client_id=other", basic("a", ""), None),
        (b"grant_type=password&username=alice&password=x&client_secret=b", None, None),
        (b"grant_type=password&username=alice&password=x", "Bearer some-token", None),
        (b"grant_type=refresh_token", None, None),
        (b"grant_type=%ff", None, None),
    ],
    ids=[
        "parameter-twice", "no-grant-type", "no-password", "json-body", "basic-and-body-secret", "basic-and-other-body-id",
        "secret-without-id", "bearer-authorization", "no-refresh-token", "not-utf8",
    ],
)
async def test_invalid_requests(running: RunningGateway, form: bytes, authorization: str | None, content_type: str | None) -> None:
    status, headers, body = await token_call(
        running, form, authorization=authorization, content_type=content_type or "application/x-www-form-urlencoded"
    )
    assert_oauth_error(status, headers, body, (400, "invalid_request", "bad_token_request"))


async def test_invalid_client_is_401_with_a_basic_challenge(running: RunningGateway) -> None:
    await add_alice(running)
    client_id, secret = await add_client(running)
    cases = [
        (basic(client_id, "wrong"), {"grant_type": "client_credentials"}),
        (basic("5f0c0000-0000-0000-0000-000000000000", secret), {"grant_type": "client_credentials"}),
        ("Basic !!!", {"grant_type": "client_credentials"}),
        (basic(client_id, ""), {"grant_type": "client_credentials"}),  # a public client cannot use client_credentials
        (None, {"grant_type": "client_credentials"}),
        (None, {"grant_type": "client_credentials", "client_id": client_id, "client_secret": "wrong"}),
        (None, {"grant_type": "password", "username": "alice", "password": PASSWORD, "client_id": client_id}),  # must authenticate
    ]
    for authorization, form in cases:
        status, headers, body = await token_call(running, form, authorization=authorization)
        assert_oauth_error(status, headers, body, (401, "invalid_client", "client_authentication_failed"))
        assert headers["WWW-Authenticate"] == 'Basic realm="labgate", charset="UTF-8"'
        assert secret not in str(body)


async def test_unsupported_and_unmapped_grants(
    start_gateway: GatewayStarter, upstream: RecordingUpstream, tmp_path: Path
) -> None:
    running = await start_token_service(
        start_gateway, tmp_path, upstream.url, source={"type": "issuer", "grants": {"password": "operator"}}
    )
    for grant_type in ("implicit", "authorization_code", "urn:ietf:params:oauth:grant-type:jwt-bearer"):
        status, headers, body = await token_call(running, {"grant_type": grant_type})
        assert_oauth_error(status, headers, body, (400, "unsupported_grant_type", "unsupported_grant_type"))
    form = {"grant_type": "emergency", "username": EMERGENCY[0], "password": EMERGENCY[1]}
    status, headers, body = await token_call(running, form)  # this upstream does not map the emergency grant
    assert_oauth_error(status, headers, body, (400, "unsupported_grant_type", "grant_not_allowed"))


async def test_scope_may_narrow_never_widen(running: RunningGateway) -> None:
    await add_alice(running)
    form = {"grant_type": "password", "username": "alice", "password": PASSWORD}
    assert (await token_call(running, {**form, "scope": "operator"}))[2]["scope"] == "operator"
    for scope in ("admin", "operator admin", "operator  "):
        status, headers, body = await token_call(running, {**form, "scope": scope})
        assert_oauth_error(status, headers, body, (400, "invalid_scope", "scope_not_allowed"))


async def test_the_token_endpoint_takes_post_only_and_small_forms(running: RunningGateway) -> None:
    status, headers, body = await token_call(running, b"x=" + b"a" * 70_000)
    assert (status, body["reason"]) == (413, "body_too_large")
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{running.url}/oauth/token") as response:
            assert (response.status, response.headers["Allow"]) == (405, "POST")
            assert (await response.json())["reason"] == "method_not_supported"


async def test_a_form_sent_in_pieces_is_read_whole(running: RunningGateway) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b"grant_type=emergency&username=", EMERGENCY[0].encode(), b"&password=", EMERGENCY[1].encode()):
            yield piece
            await asyncio.sleep(0)  # each piece its own write: its own HTTP chunk

    async with aiohttp.ClientSession() as session:
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        async with session.post(f"{running.url}/oauth/token", data=pieces(), headers=headers) as answer:
            assert answer.status == 200, await answer.text()


# -- audiences: several issuer upstreams -----------------------------------------


async def test_the_audience_parameter_picks_the_upstream(
    start_http1_gateway: GatewayStarter, upstream: RecordingUpstream, tmp_path: Path
) -> None:
    (tmp_path / "policies").mkdir(exist_ok=True)
    running = await start_token_service(start_http1_gateway, tmp_path, upstream.url, source=ISSUER_SOURCE)
    # A second labgate: two issuer upstreams, "demo" and "lab2" (audience "lab-two").
    other = {
        "name": "lab2", "url": upstream.url, "path_prefix": "/lab2", "pack": "lab",
        "token_source": {"type": "issuer", "audience": "lab-two", "grants": GRANTS},
    }
    first = {"name": "demo", "url": upstream.url, "path_prefix": "/demo", "pack": "lab", "token_source": ISSUER_SOURCE}
    two = await start_http1_gateway(
        upstream.url, upstreams=[first, other], issuer=issuer_section(), listen={"address": "127.0.0.1", "port": free_port()}
    )
    assert running.config.store.path == two.config.store.path  # one store: alice exists for both
    await add_alice(two)
    client_id, secret = await add_client(two, audience="lab2")
    form = {"grant_type": "password", "username": "alice", "password": PASSWORD}
    status, headers, body = await token_call(two, form)
    assert_oauth_error(status, headers, body, (400, "invalid_request", "bad_token_request"))  # which one?
    status, headers, body = await token_call(two, {**form, "audience": "elsewhere"})
    assert_oauth_error(status, headers, body, (400, "invalid_target", "unknown_audience"))
    for audience in ("lab2", "lab-two"):
        status, _, body = await token_call(two, {**form, "audience": audience})
        assert status == 200 and claims(body["access_token"])["aud"] == "lab-two"
        assert (await api_get(two, "/lab2/api/hosts", body["access_token"]))[0] == 200
        assert (await api_get(two, "/demo/api/hosts", body["access_token"]))[1]["reason"] == "wrong_audience"
    status, headers, body = await token_call(two, {"grant_type": "client_credentials", "audience": "demo"}, authorization=basic(client_id, secret))
    assert_oauth_error(status, headers, body, (400, "unauthorized_client", "client_not_authorized"))
    status, _, body = await token_call(two, {"grant_type": "client_credentials", "audience": "lab2"}, authorization=basic(client_id, secret))
    assert status == 200


# -- refresh chains -----------------------------------------------------------------


async def test_refresh_rotates_and_reuse_revokes_the_whole_chain(running: RunningGateway) -> None:
    await add_alice(running)
    _, _, first = await token_call(running, {"grant_type": "password", "username": "alice", "password": PASSWORD})
    status, _, second = await token_call(running, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert status == 200 and second["refresh_token"] != first["refresh_token"]
    assert claims(second["access_token"])["chain"] == claims(first["access_token"])["chain"]
    _, _, third = await token_call(running, {"grant_type": "refresh_token", "refresh_token": second["refresh_token"]})
    assert (await api_get(running, "/demo/api/hosts", first["access_token"]))[0] == 200  # rotation alone kills nothing

    # The first refresh token again: copied by someone.  The whole chain dies.
    status, headers, body = await token_call(running, {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]})
    assert_oauth_error(status, headers, body, (400, "invalid_grant", "refresh_token_reused"))
    for answer in (first, second, third):
        status, refused = await api_get(running, "/demo/api/hosts", answer["access_token"])
        assert (status, refused["reason"]) == (401, "revoked")  # the newest access token too
    status, headers, body = await token_call(running, {"grant_type": "refresh_token", "refresh_token": third["refresh_token"]})
    assert_oauth_error(status, headers, body, (400, "invalid_grant", "invalid_grant"))  # the newest refresh token no longer renews


async def test_a_refresh_token_is_not_an_access_token_nor_renewable_by_another_client(running: RunningGateway) -> None:
    await add_alice(running)
    form = {"grant_type": "password", "username": "alice", "password": PASSWORD}
    _, _, body = await token_call(running, form, authorization=basic("cli-a", ""))
    assert (await api_get(running, "/demo/api/hosts", body["refresh_token"]))[1]["reason"] == "malformed_token"
    status, headers, refused = await token_call(
        running, {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}, authorization=basic("cli-b", "")
    )
    assert_oauth_error(status, headers, refused, (400, "invalid_grant", "invalid_grant"))
    status, _, renewed = await token_call(
        running, {"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}, authorization=basic("cli-a", "")
    )
    assert status == 200 and claims(renewed["access_token"])["client_id"] == "cli-a"
    status, headers, refused = await token_call(running, {"grant_type": "refresh_token", "refresh_token": "never-issued"})
    assert_oauth_error(status, headers, refused, (400, "invalid_grant", "invalid_grant"))


# -- the management API kills live tokens -------------------------------------------


async def test_a_secret_reset_kills_the_clients_live_token_on_its_next_request(running: RunningGateway) -> None:
    await add_alice(running)
    client_id, secret = await add_client(running)
    _, _, body = await token_call(running, {"grant_type": "client_credentials"}, authorization=basic(client_id, secret))
    assert (await api_get(running, "/demo/api/hosts", body["access_token"]))[0] == 200
    _, _, reset = await admin_call(running, "POST", f"/clients/{client_id}/reset-secret")
    status, refused = await api_get(running, "/demo/api/hosts", body["access_token"])
    assert (status, refused["reason"]) == (401, "revoked")
    status, _, _ = await token_call(running, {"grant_type": "client_credentials"}, authorization=basic(client_id, secret))
    assert status == 401  # the old secret is gone
    status, _, fresh = await token_call(running, {"grant_type": "client_credentials"}, authorization=basic(client_id, reset["client_secret"]))
    assert status == 200 and (await api_get(running, "/demo/api/hosts", fresh["access_token"]))[0] == 200


async def test_deleting_a_client_kills_its_live_token_on_its_next_request(running: RunningGateway) -> None:
    await add_alice(running)
    client_id, secret = await add_client(running)
    _, _, body = await token_call(running, {"grant_type": "client_credentials"}, authorization=basic(client_id, secret))
    assert (await api_get(running, "/demo/api/hosts", body["access_token"]))[0] == 200
    assert (await admin_call(running, "DELETE", f"/clients/{client_id}"))[0] == 204
    assert (await api_get(running, "/demo/api/hosts", body["access_token"]))[1]["reason"] == "revoked"
    status, _, _ = await token_call(running, {"grant_type": "client_credentials"}, authorization=basic(client_id, secret))
    assert status == 401


async def test_deleting_a_subject_kills_its_tokens_refresh_chains_and_clients(running: RunningGateway) -> None:
    await add_alice(running)
    client_id, secret = await add_client(running)
    _, _, by_password = await token_call(running, {"grant_type": "password", "username": "alice", "password": PASSWORD})
    _, _, by_client = await token_call(running, {"grant_type": "client_credentials"}, authorization=basic(client_id, secret))
    for body in (by_password, by_client):
        assert (await api_get(running, "/demo/api/hosts", body["access_token"]))[0] == 200
    assert (await admin_call(running, "DELETE", "/subjects/alice"))[0] == 204
    for body in (by_password, by_client):
        assert (await api_get(running, "/demo/api/hosts", body["access_token"]))[1]["reason"] == "revoked"
    status, _, body = await token_call(running, {"grant_type": "refresh_token", "refresh_token": by_password["refresh_token"]})
    assert (status, body["error"]) == (400, "invalid_grant")
    assert (await token_call(running, {"grant_type": "client_credentials"}, authorization=basic(client_id, secret)))[0] == 401
    assert (await admin_call(running, "GET", f"/clients/{client_id}"))[0] == 404
    # A new alice is someone new: her tokens work, the old chain stays dead.
    await add_alice(running)
    _, _, fresh = await token_call(running, {"grant_type": "password", "username": "alice", "password": PASSWORD})
    assert (await api_get(running, "/demo/api/hosts", fresh["access_token"]))[0] == 200
    status, _, _ = await token_call(running, {"grant_type": "refresh_token", "refresh_token": by_password["refresh_token"]})
    assert status == 400


# -- secrets stay secret -----------------------------------------------------------


async def test_no_secret_password_or_token_in_logs_lists_bodies_or_the_store(
    running: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        await add_alice(running)
        client_id, secret = await add_client(running)
        _, _, issued = await token_call(running, {"grant_type": "password", "username": "alice", "password": PASSWORD})
        _, _, renewed = await token_call(running, {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]})
        _, _, by_client = await token_call(running, {"grant_type": "client_credentials"}, authorization=basic(client_id, secret))
        emergency = {"grant_type": "emergency", "username": EMERGENCY[0], "password": EMERGENCY[1]}
        _, _, by_emergency = await token_call(running, emergency)
        errors = [
            await token_call(running, {"grant_type": "password", "username": "alice", "password": PASSWORD + "x"}),
            await token_call(running, {"grant_type": "client_credentials"}, authorization=basic(client_id, secret + "x")),
            await token_call(running, {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]}),  # reuse
            await token_call(running, {**emergency, "password": "emergency-guess"}),
            await admin_call(running, "GET", "/subjects", authorization=basic(ADMIN[0], "admin-guess")),
            await admin_call(running, "GET", "/subjects", authorization=f"Bearer {issued['access_token']}"),
        ]
        listings = [await admin_call(running, "GET", path) for path in ("/subjects", "/clients", "/subjects/alice", f"/clients/{client_id}")]
    secrets = [
        PASSWORD, PASSWORD + "x", secret, secret + "x", EMERGENCY[1], "emergency-guess", ADMIN[1], "admin-guess",
        issued["access_token"], issued["refresh_token"], renewed["access_token"], renewed["refresh_token"],
        by_client["access_token"], by_emergency["access_token"],
    ]
    seen = caplog.text + repr(errors) + repr(listings)
    for value in secrets:
        assert value not in seen
    assert "scrypt$" not in repr(listings)
    assert running.config.store.path is not None
    with sqlite3.connect(running.config.store.path) as db:
        dump = "\n".join(db.iterdump())
    for value in secrets:
        assert value not in dump
    assert dump.count("scrypt$") >= 2  # alice's password and the client's secret, hashed
