"""The management API over real HTTP: administrator authentication, routing, subjects and API clients."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from proxy.issuer.access_tokens import mint_access_token
from proxy.issuer.ring import KeyRing
from proxy.store.open import open_store
from tests.conftest import (
    GatewayStarter,
    RecordingUpstream,
    RunningGateway,
    raw_request,
)
from tests.gateway.token_service import (
    ADMIN,
    ADMIN_HASH,
    admin_call,
    basic,
    start_token_service,
)
from tests.issuer.issuing import grant


@pytest.fixture
async def running(start_http1_gateway: GatewayStarter, upstream: RecordingUpstream, tmp_path: Path) -> RunningGateway:
    return await start_token_service(start_http1_gateway, tmp_path, upstream.url)


def assert_refused(status: int, headers: dict[str, str], body: dict[str, str], expected: tuple[int, str]) -> None:
    assert (status, body["reason"]) == expected
    assert set(body) == {"error", "error_description", "reason", "request_id"}
    assert headers["Cache-Control"] == "no-store"


# -- who may manage tokens -----------------------------------------------------


async def test_no_credentials_are_asked_for_with_a_basic_challenge(running: RunningGateway) -> None:
    status, headers, body = await admin_call(running, "GET", "/subjects", authorization=None)
    assert_refused(status, headers, body, (401, "admin_unauthorized"))
    assert headers["WWW-Authenticate"] == 'Basic realm="labgate-admin", charset="UTF-8"'


@pytest.mark.parametrize(
    "authorization",
    [
        basic(ADMIN[0], "wrong password"),
        basic("root", ADMIN[1]),
        basic(ADMIN[0], ""),
        "Basic not-base64!",
        "Basic " + "YWRtaW4=",  # "admin" without a colon
        "Digest username=admin",
        "Basic",
        ADMIN_HASH,
    ],
    ids=["wrong-password", "wrong-user", "empty-password", "not-base64", "no-colon", "other-scheme", "no-credentials", "the-hash"],
)
async def test_wrong_credentials_are_401_and_never_echoed(
    running: RunningGateway, authorization: str, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        status, headers, body = await admin_call(running, "GET", "/subjects", authorization=authorization)
    assert_refused(status, headers, body, (401, "admin_unauthorized"))
    assert headers["WWW-Authenticate"].startswith('Basic realm="labgate-admin"')
    secret_parts = {ADMIN[1], "wrong password", authorization}
    assert not any(part in str(body) or part in caplog.text for part in secret_parts)


async def test_two_authorization_headers_are_refused(running: RunningGateway) -> None:
    head = (
        "GET /-/admin/subjects HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        f"Authorization: {basic(*ADMIN)}\r\nAuthorization: {basic(*ADMIN)}\r\n\r\n"
    )
    answer = await raw_request(running.port, head)
    assert (answer.status, answer.json()["reason"]) == (401, "admin_unauthorized")


@pytest.mark.parametrize("token", ["opaque-token-value", "eyJhbGciOiJub25lIn0.e30."], ids=["opaque", "jwt-looking"])
async def test_a_bearer_token_can_never_manage_tokens(running: RunningGateway, token: str) -> None:
    status, headers, body = await admin_call(running, "GET", "/subjects", authorization=f"Bearer {token}")
    assert_refused(status, headers, body, (403, "token_management_forbidden"))
    assert token not in str(body)


async def test_a_labgate_issued_access_token_is_forbidden_too(running: RunningGateway, upstream: RecordingUpstream) -> None:
    assert running.config.issuer is not None
    store = open_store(running.config.store)
    try:
        ring = KeyRing(store, running.config.issuer)
        token = mint_access_token(await ring.signing_key(), ring.settings, grant(token_type="operator"), now=time.time()).token
    finally:
        await store.close()
    for method, path in (("GET", "/subjects"), ("POST", "/clients"), ("DELETE", "/subjects/alice")):
        status, headers, body = await admin_call(running, method, path, authorization=f"Bearer {token}")
        assert_refused(status, headers, body, (403, "token_management_forbidden"))
    assert not upstream.received


async def test_authentication_comes_before_routing(running: RunningGateway) -> None:
    """Unauthenticated callers learn nothing about which resources exist."""
    status, _, body = await admin_call(running, "GET", "/no-such-thing", authorization=None)
    assert (status, body["reason"]) == (401, "admin_unauthorized")


# -- routing and bodies --------------------------------------------------------


async def test_unknown_paths_methods_queries_and_bodies_are_refused(running: RunningGateway) -> None:
    assert (await admin_call(running, "GET", "/nothing"))[2]["reason"] == "not_found"
    assert (await admin_call(running, "GET", ""))[2]["reason"] == "not_found"
    status, _, body = await admin_call(running, "PUT", "/subjects")
    assert (status, body["reason"]) == (405, "admin_method_not_allowed")
    assert (await admin_call(running, "GET", "/subjects?name=x"))[2]["reason"] == "bad_admin_request"
    for target in ("/-/admin/subjects/%2e%2e", "/-/admin/subjects/a%2Fb", "/-/admin/subjects/../clients"):
        head = f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nAuthorization: {basic(*ADMIN)}\r\n\r\n"
        answer = await raw_request(running.port, head)  # sent as is: ambiguous paths never reach a handler
        assert (answer.status, answer.json()["reason"]) == (400, "ambiguous_path"), target
    assert (await admin_call(running, "GET", "/subjects/sp ace".replace(" ", "%20")))[2]["reason"] == "not_found"
    for sent in ({"name": "x", "nmae": "y"}, {"password": "p"}, ["name"], {"name": 7}):
        status, _, body = await admin_call(running, "POST", "/subjects", body=sent)
        assert (status, body["reason"]) == (400, "bad_admin_request"), sent
    async with aiohttp.ClientSession() as session:
        url = f"{running.url}/-/admin/subjects"
        auth = {"Authorization": basic(*ADMIN)}
        async with session.post(url, data=b'{"name": "a", "name": "b"}', headers={**auth, "Content-Type": "application/json"}) as r:
            assert (r.status, (await r.json())["reason"]) == (400, "bad_admin_request")
        async with session.post(url, data=b"name=a", headers={**auth, "Content-Type": "application/x-www-form-urlencoded"}) as r:
            assert (r.status, (await r.json())["reason"]) == (400, "bad_admin_request")
        async with session.post(url, data=b"[" * 100_000, headers={**auth, "Content-Type": "application/json"}) as r:
            assert r.status == 413


async def test_a_body_sent_in_pieces_is_read_whole(running: RunningGateway) -> None:
    async def pieces() -> AsyncIterator[bytes]:
        for piece in (b'{"name": ', b'"alice"', b', "password": ', b'"pw"}'):
            yield piece
            await asyncio.sleep(0)  # each piece its own write: its own HTTP chunk

    assert (await admin_call(running, "GET", "/subjects"))[0] == 200  # the credentials are known now: no hashing delay
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": basic(*ADMIN), "Content-Type": "application/json"}
        async with session.post(f"{running.url}/-/admin/subjects", data=pieces(), headers=headers) as answer:
            assert answer.status == 201 and (await answer.json())["has_password"] is True


async def test_a_trailing_slash_names_the_same_resource(running: RunningGateway) -> None:
    assert (await admin_call(running, "GET", "/subjects/"))[0] == 200


# -- subjects ------------------------------------------------------------------


async def test_simultaneous_creates_of_one_subject_give_one_subject(running: RunningGateway) -> None:
    """Both pass the "exists already?" check while their passwords hash; put-if-absent lets one in."""
    answers = await asyncio.gather(*(
        admin_call(running, "POST", "/subjects", body={"name": "twin", "password": f"password {n}"}) for n in range(2)
    ))
    assert sorted(status for status, _, _ in answers) == [201, 409], answers
    (refused,) = [body for status, _, body in answers if status == 409]
    assert refused["reason"] == "already_exists" and "password" not in refused["error_description"]
    status, _, listing = await admin_call(running, "GET", "/subjects")
    assert [s["name"] for s in listing["subjects"]] == ["twin"]


async def test_subjects_are_created_listed_shown_and_deleted(running: RunningGateway, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG):
        status, headers, created = await admin_call(running, "POST", "/subjects", body={"name": "alice", "password": "alice-pw"})
        assert status == 201 and headers["Cache-Control"] == "no-store"
        assert created["name"] == "alice" and created["has_password"] is True and "password" not in str(created).replace("has_password", "")
        assert (await admin_call(running, "POST", "/subjects", body={"name": "svc"}))[0] == 201
        status, _, body = await admin_call(running, "POST", "/subjects", body={"name": "alice"})
        assert (status, body["reason"]) == (409, "already_exists")
        status, _, listing = await admin_call(running, "GET", "/subjects")
        assert status == 200 and [s["name"] for s in listing["subjects"]] == ["alice", "svc"]
        assert [s["has_password"] for s in listing["subjects"]] == [True, False]
        assert (await admin_call(running, "GET", "/subjects/alice"))[2] == created
        status, _, body = await admin_call(running, "DELETE", "/subjects/alice")
        assert (status, body) == (204, None)
        assert (await admin_call(running, "GET", "/subjects/alice"))[2]["reason"] == "not_found"
        assert (await admin_call(running, "DELETE", "/subjects/alice"))[2]["reason"] == "not_found"
    assert "alice-pw" not in caplog.text and "alice-pw" not in str(listing)


@pytest.mark.parametrize("name", ["", "a b", "a/b", "x" * 129, "é", ".."], ids=["empty", "space", "slash", "long", "non-ascii", "dots"])
async def test_subject_names_are_plain(running: RunningGateway, name: str) -> None:
    status, _, body = await admin_call(running, "POST", "/subjects", body={"name": name})
    assert (status, body["reason"]) == (400, "bad_admin_request")


# -- API clients ---------------------------------------------------------------


async def test_a_client_secret_is_shown_once_and_never_listed(running: RunningGateway, caplog: pytest.LogCaptureFixture) -> None:
    await admin_call(running, "POST", "/subjects", body={"name": "alice"})
    with caplog.at_level(logging.DEBUG):
        status, headers, created = await admin_call(running, "POST", "/clients", body={"name": "backup job", "subject": "alice"})
        assert status == 201 and headers["Cache-Control"] == "no-store" and headers["Pragma"] == "no-cache"
        secret, client_id = created["client_secret"], created["client_id"]
        assert len(secret) >= 40 and created["subject"] == "alice" and created["audience"] is None
        _, _, listing = await admin_call(running, "GET", "/clients")
        _, _, shown = await admin_call(running, "GET", f"/clients/{client_id}")
        assert [c["client_id"] for c in listing["clients"]] == [client_id]
        assert "client_secret" not in shown and secret not in str(listing) and secret not in str(shown)
        assert "scrypt" not in str(listing) + str(shown)
        status, _, reset = await admin_call(running, "POST", f"/clients/{client_id}/reset-secret")
        assert status == 200 and reset["client_secret"] != secret and reset["client_id"] == client_id
        assert (await admin_call(running, "DELETE", f"/clients/{client_id}"))[0] == 204
        assert (await admin_call(running, "GET", f"/clients/{client_id}"))[2]["reason"] == "not_found"
        assert (await admin_call(running, "POST", f"/clients/{client_id}/reset-secret"))[2]["reason"] == "not_found"
    assert secret not in caplog.text and reset["client_secret"] not in caplog.text


async def test_a_client_needs_an_existing_subject_and_a_known_audience(running: RunningGateway) -> None:
    status, _, body = await admin_call(running, "POST", "/clients", body={"name": "job", "subject": "nobody"})
    assert (status, body["reason"]) == (400, "bad_admin_request") and "create it first" in body["error_description"]
    await admin_call(running, "POST", "/subjects", body={"name": "alice"})
    status, _, body = await admin_call(running, "POST", "/clients", body={"name": "job", "subject": "alice", "audience": "elsewhere"})
    assert (status, body["reason"]) == (400, "bad_admin_request")
    status, _, body = await admin_call(running, "POST", "/clients", body={"name": "job", "subject": "alice", "audience": "demo"})
    assert status == 201 and body["audience"] == "demo"


async def test_deleting_a_subject_deletes_its_clients(running: RunningGateway) -> None:
    for name in ("alice", "bob"):
        await admin_call(running, "POST", "/subjects", body={"name": name})
    _, _, of_alice = await admin_call(running, "POST", "/clients", body={"name": "a", "subject": "alice"})
    _, _, of_bob = await admin_call(running, "POST", "/clients", body={"name": "b", "subject": "bob"})
    await admin_call(running, "DELETE", "/subjects/alice")
    _, _, listing = await admin_call(running, "GET", "/clients")
    assert [c["client_id"] for c in listing["clients"]] == [of_bob["client_id"]]
    assert of_alice["client_id"] != of_bob["client_id"]
