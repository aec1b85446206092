"""The observe source end to end: tokens a SimpliVity appliance issues, learned as they pass labgate.

A mock appliance (proxy.mocks.simplivity) issues opaque UUID tokens; labgate
learns their types from the grant and holds an emergency token to its six
operations, with nothing it refuses ever reaching the appliance.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.mocks.simplivity import CLIENT_BASIC, SimplivityAppliance
from proxy.store.sqlite import SqliteStore
from proxy.token_facts import token_fingerprint
from tests.conftest import GatewayStarter, RunningGateway, app_on_loopback
from tests.gateway.uses import use_written_since

POLICIES = str(Path(__file__).resolve().parents[2] / "policies")
OBSERVE = {
    "type": "observe",
    "token_endpoint": "/api/oauth/token",
    "revoke_endpoint": "GET /api/oauth/revoke",
    "types": [
        {"token_type": "emergency", "match": {"grant_type": "emergency"}},
        {"token_type": "password", "match": {"grant_type": "password"}},
    ],
}
EMERGENCY = {"grant_type": "emergency", "username": "svtcli", "password": "svtcli-pw"}
PASSWORD = {"grant_type": "password", "username": "administrator@vsphere.local", "password": "vmware1!"}


@pytest.fixture
async def appliance() -> AsyncIterator[tuple[SimplivityAppliance, str]]:
    mock = SimplivityAppliance()
    async with app_on_loopback(mock.app()) as url:
        yield mock, url


async def start(start_gateway: GatewayStarter, url: str, **source: Any) -> RunningGateway:
    return await start_gateway(
        url,
        policies=[POLICIES],
        upstream={"name": "simplivity", "path_prefix": "/svt", "pack": "simplivity", "token_source": {**OBSERVE, **source}},
    )


async def token_call(
    gateway: RunningGateway, body: bytes | dict[str, str], *, headers: dict[str, str] | None = None, path: str = "/svt/api/oauth/token"
) -> tuple[int, dict[str, Any]]:
    sent = {"Authorization": CLIENT_BASIC, **(headers or {})}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{gateway.url}{path}", data=body, headers=sent) as response:
            return response.status, await response.json(content_type=None)


async def get_token(gateway: RunningGateway, grant: dict[str, str]) -> str:
    status, body = await token_call(gateway, grant)
    assert status == 200, body
    token = body["access_token"]
    assert isinstance(token, str)
    return token


async def call(gateway: RunningGateway, method: str, path: str, token: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"{gateway.url}/svt{path}", headers={"Authorization": f"Bearer {token}"}) as response:
            return response.status, await response.json(content_type=None)


async def test_an_emergency_token_reaches_its_six_operations_and_nothing_else(
    appliance: tuple[SimplivityAppliance, str], start_gateway: GatewayStarter
) -> None:
    mock, url = appliance
    gateway = await start(start_gateway, url)
    token = await get_token(gateway, EMERGENCY)
    for path in ("/api/hosts", "/api/omnistack_clusters", "/api/backups", "/api/datastores", "/api/virtual_machines"):
        status, _ = await call(gateway, "GET", path + "?offset=0&limit=10", token)
        assert status == 200, path
    status, body = await call(gateway, "POST", "/api/backups/backup-1/restore", token)
    assert status == 202 and body["task"]["state"] == "IN_PROGRESS"
    forwarded = len(mock.received)
    for method, path, reason in (
        ("GET", "/api/hosts/42240000-host-0", "route_not_allowed"),
        ("DELETE", "/api/backups/backup-1", "route_not_allowed"),
            ("DELETE", "/api/hosts", "method_not_allowed"),
        ("GET", "/api/tasks/1", "route_not_allowed"),
        ("GET", "/api/hosts?sort=name", "query_param_not_allowed"),
        ("GET", "/api/backups?virtual_machine_id=vm-1", "query_param_not_allowed"),
        ("GET", "/api/hosts?show_optional_fields=true", "query_param_not_allowed"),
    ):
        status, body = await call(gateway, method, path, token)
        assert (status, body["reason"]) == (403, reason), path
    assert len(mock.received) == forwarded


async def test_a_password_token_keeps_the_full_api(appliance: tuple[SimplivityAppliance, str], start_gateway: GatewayStarter) -> None:
    _, url = appliance
    gateway = await start(start_gateway, url)
    token = await get_token(gateway, PASSWORD)
    status, body = await call(gateway, "GET", "/api/hosts/42240000-host-0", token)
    assert status == 200 and body["host"]["id"] == "42240000-host-0"
    status, _ = await call(gateway, "GET", "/api/hosts?sort=name&order=descending", token)
    assert status == 200


async def test_a_token_labgate_never_saw_issued_is_401_unknown_token(
    appliance: tuple[SimplivityAppliance, str], start_gateway: GatewayStarter
) -> None:
    mock, url = appliance
    gateway = await start(start_gateway, url)
    # Issued by the appliance directly, around labgate: labgate cannot know its type.
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/api/oauth/token", data=EMERGENCY, headers={"Authorization": CLIENT_BASIC}) as response:
            direct = (await response.json())["access_token"]
    mock.received.clear()
    for token in (direct, "d3c4782f-0000-4000-8000-000000000000"):
        status, body = await call(gateway, "GET", "/api/hosts", token)
        assert (status, body["reason"]) == (401, "unknown_token")
        assert token not in json.dumps(body)
    assert mock.received == []


async def test_wrong_credentials_pass_through_as_the_appliance_said_and_teach_nothing(
    appliance: tuple[SimplivityAppliance, str], start_gateway: GatewayStarter
) -> None:
    _, url = appliance
    gateway = await start(start_gateway, url)
    status, body = await token_call(gateway, {**EMERGENCY, "password": "wrong"})
    assert (status, body) == (400, {"error": "invalid_grant", "error_description": "Invalid credentials"})


@pytest.mark.parametrize(
    "body, headers, path, status, reason",
    [
        ({"grant_type": "client_credentials"}, {}, "/svt/api/oauth/token", 400, "grant_not_allowed"),
        (b"grant_type=password&grant_type=emergency&username=svtcli&password=x", {"Content-Type": "application/x-www-form-urlencoded"}, "/svt/api/oauth/token", 400, "bad_token_request"),
        (b'{"grant_type": "emergency"}', {"Content-Type": "application/json"}, "/svt/api/oauth/token", 400, "bad_token_request"),
        (b"username=svtcli&password=x", {"Content-Type": "application/x-www-form-urlencoded"}, "/svt/api/oauth/token", 400, "bad_token_request"),
        (b"grant_type=emergency&%zz", {"Content-Type": "application/x-www-form-urlencoded"}, "/svt/api/oauth/token", 400, "bad_token_request"),
        (b"grant_type=emergency&username=\xff", {"Content-Type": "application/x-www-form-urlencoded"}, "/svt/api/oauth/token", 400, "bad_token_request"),
        (EMERGENCY, {}, "/svt/api/oauth/token?grant_type=password", 400, "bad_token_request"),
        (b"grant_type=emergency&password=" + b"x" * 70_000, {"Content-Type": "application/x-www-form-urlencoded"}, "/svt/api/oauth/token", 413, "body_too_large"),
        ({**EMERGENCY, "client_id": "other"}, {}, "/svt/api/oauth/token", 400, "bad_token_request"),
    ],
    ids=["unmapped-grant", "duplicate-grant-type", "json-body", "no-grant-type", "bad-escape", "not-utf8", "query-string", "too-large", "two-client-ids"],
)
async def test_bad_token_requests_are_refused_before_the_appliance(
    appliance: tuple[SimplivityAppliance, str],
    start_gateway: GatewayStarter,
    body: Any,
    headers: dict[str, str],
    path: str,
    status: int,
    reason: str,
) -> None:
    mock, url = appliance
    gateway = await start(start_gateway, url)
    got_status, got = await token_call(gateway, body, headers=headers, path=path)
    assert (got_status, got["reason"]) == (status, reason)
    assert set(got) == {"error", "error_description", "reason", "request_id"}
    assert "svtcli-pw" not in json.dumps(got)
    assert mock.received == []


async def test_revoking_through_labgate_kills_the_token_in_labgate_first(
    appliance: tuple[SimplivityAppliance, str], start_gateway: GatewayStarter
) -> None:
    mock, url = appliance
    gateway = await start(start_gateway, url)
    token = await get_token(gateway, EMERGENCY)
    async with aiohttp.ClientSession() as session:
        # Not a route of the emergency type: a token may always end itself.
        async with session.get(f"{gateway.url}/svt/api/oauth/revoke", headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200
    assert ("GET", "/api/oauth/revoke") in mock.received
    assert token not in mock.tokens
    mock.received.clear()
    status, body = await call(gateway, "GET", "/api/hosts", token)
    assert status == 401 and body["reason"] in ("revoked", "unknown_token")
    assert mock.received == []


async def test_an_answer_without_a_token_is_502_and_teaches_nothing(start_gateway: GatewayStarter) -> None:
    async def broken_token_endpoint(request: web.Request) -> web.Response:
        return web.Response(text="<html>maintenance</html>", content_type="text/html")

    app = web.Application()
    app.router.add_post("/api/oauth/token", broken_token_endpoint)
    async with app_on_loopback(app) as url:
        gateway = await start(start_gateway, url)
        status, body = await token_call(gateway, EMERGENCY)
        assert (status, body["reason"]) == (502, "token_answer_unreadable")


async def test_no_password_or_token_reaches_the_store_or_the_logs(
    appliance: tuple[SimplivityAppliance, str], start_gateway: GatewayStarter, caplog: pytest.LogCaptureFixture
) -> None:
    _, url = appliance
    gateway = await start(start_gateway, url)
    with caplog.at_level(logging.DEBUG):
        token = await get_token(gateway, EMERGENCY)
        await call(gateway, "GET", "/api/hosts", token)
        await token_call(gateway, {**EMERGENCY, "password": "wrong-secret-pw"})
    store_path = gateway.config.store.path
    assert store_path is not None
    with sqlite3.connect(store_path) as db:
        dump = "\n".join(db.iterdump())
    logs = caplog.text
    for secret in (token, "svtcli-pw", "wrong-secret-pw"):
        assert secret not in dump
        assert secret not in logs
    assert '"token_type":"emergency"' in logs.replace(" ", "")


# -- the emergency type's lifetimes (HPE SimpliVity emergency grant document: idle 10 minutes, absolute 24 hours) ---------------


async def learned_then_aged(gateway: RunningGateway, *, issued_ago: float, used_ago: float | None) -> str:
    """A token the appliance issued through labgate, its record then moved back in time in the store.

    The appliance still honours the token (its own clock says it is fresh), so
    what refuses it can only be labgate's lifetimes.
    """
    token = await get_token(gateway, EMERGENCY)
    store_path = gateway.config.store.path
    assert store_path is not None
    store = SqliteStore(store_path)
    try:
        key = token_fingerprint(token)
        learned = await store.get_token(key, time.time())
        assert learned is not None and learned.token_type == "emergency"
        now = time.time()
        await store.put_token(key, replace(learned, issued_at=now - issued_ago, expires_at=now + 3600))
        if used_ago is not None:
            await store.touch(key, now - used_ago, until=now + 3600)
    finally:
        await store.close()
    return token


@pytest.mark.parametrize(
    "issued_ago, used_ago, reason",
    [(25 * 3600, 60, "absolute_expired"), (30 * 60, 11 * 60, "idle_expired"), (11 * 60, None, "idle_expired")],
    ids=["issued-25h-ago-used-a-minute-ago", "last-used-11-minutes-ago", "never-used-in-11-minutes"],
)
async def test_an_emergency_token_dies_10_minutes_idle_or_24_hours_after_issue(
    appliance: tuple[SimplivityAppliance, str], start_gateway: GatewayStarter, issued_ago: float, used_ago: float | None, reason: str
) -> None:
    mock, url = appliance
    gateway = await start(start_gateway, url)
    token = await learned_then_aged(gateway, issued_ago=issued_ago, used_ago=used_ago)
    mock.received.clear()
    status, body = await call(gateway, "GET", "/api/hosts", token)
    assert (status, body["reason"]) == (401, reason)
    assert set(body) == {"error", "error_description", "reason", "request_id"} and token not in json.dumps(body)
    assert mock.received == []


async def test_an_emergency_token_used_9_minutes_ago_still_works_and_its_use_counts(
    appliance: tuple[SimplivityAppliance, str], start_gateway: GatewayStarter
) -> None:
    mock, url = appliance
    gateway = await start(start_gateway, url)
    token = await learned_then_aged(gateway, issued_ago=23 * 3600, used_ago=9 * 60)
    mock.received.clear()
    sent = time.time()
    status, body = await call(gateway, "GET", "/api/hosts?limit=1", token)
    assert status == 200 and len(body["hosts"]) == 1
    assert mock.received == [("GET", "/api/hosts?limit=1")]
    store_path = gateway.config.store.path
    assert store_path is not None
    last = await use_written_since(store_path, token_fingerprint(token), sent)
    assert last is not None and last >= sent  # the idle clock starts again from this use
