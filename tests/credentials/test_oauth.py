"""An OAuth login labgate performs: one login for many requests, renewal on a clock the test moves,
backing off after failures, and no secret in any log line or error."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from proxy.credentials.base import CredentialUnavailable
from proxy.credentials.oauth import OAuthCredential
from proxy.credentials.settings import OAuthCredentialSettings
from tests.clock import Clock
from tests.conftest import app_on_loopback, free_port

PASSWORD = "pa55-w0rd-never-shown"
CLIENT_SECRET = "client-secret-never-shown"


@dataclass
class Login:
    form: dict[str, list[str]]
    authorization: str | None


@dataclass
class TokenEndpoint:
    """The appliance's token endpoint: records every login, answers what the test says."""

    url: str = ""
    logins: list[Login] = field(default_factory=list)
    expires_in: Any = 3600
    status: int = 200
    answer: Any = None  # replaces the usual answer when set
    gate: asyncio.Event | None = None  # when set, logins wait for it

    async def handle(self, request: web.Request) -> web.Response:
        form: dict[str, list[str]] = {}
        for name, value in (await request.post()).items():
            form.setdefault(name, []).append(str(value))
        self.logins.append(Login(form, request.headers.get("Authorization")))
        if self.gate is not None:
            await self.gate.wait()
        if self.status != 200:
            return web.json_response({"error": "invalid_grant", "error_description": "Invalid credentials"}, status=self.status)
        if self.answer is not None:
            return web.Response(body=self.answer if isinstance(self.answer, bytes) else json.dumps(self.answer).encode())
        body: dict[str, Any] = {"access_token": f"appliance-token-{len(self.logins)}", "token_type": "bearer"}
        if self.expires_in is not None:
            body["expires_in"] = self.expires_in
        return web.json_response(body)


@pytest.fixture
async def endpoint() -> AsyncIterator[TokenEndpoint]:
    recorder = TokenEndpoint()
    app = web.Application()
    app.router.add_post("/api/oauth/token", recorder.handle)
    async with app_on_loopback(app) as url:
        recorder.url = f"{url}/api/oauth/token"
        yield recorder


@pytest.fixture
def clock() -> Clock:
    return Clock(1000.0)


def password_login(url: str, **changes: Any) -> OAuthCredentialSettings:
    settings: dict[str, Any] = {"grant": "password", "username": "svc-labgate", "password": PASSWORD, **changes}
    return OAuthCredentialSettings(url, **settings)


@pytest.fixture
async def credentials() -> AsyncIterator[list[OAuthCredential]]:
    """Every credential a test opens, closed at its end."""
    opened: list[OAuthCredential] = []
    yield opened
    for credential in opened:
        await credential.close()


def open_login(opened: list[OAuthCredential], settings: OAuthCredentialSettings, clock: Clock) -> OAuthCredential:
    credential = OAuthCredential(settings, upstream="appliance", clock=clock)
    opened.append(credential)
    return credential


async def wait_for_logins(endpoint: TokenEndpoint, count: int) -> None:
    for _ in range(200):
        if len(endpoint.logins) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{len(endpoint.logins)} logins, expected {count}")


async def settle(credential: OAuthCredential) -> None:
    """Let a background login finish (bounded)."""
    for _ in range(200):
        if credential._logging_in is None:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the login never finished")


async def test_many_requests_at_once_share_one_login(
    endpoint: TokenEndpoint, clock: Clock, credentials: list[OAuthCredential]
) -> None:
    endpoint.gate = asyncio.Event()
    credential = open_login(credentials, password_login(endpoint.url), clock)
    waiting = [asyncio.create_task(credential.authorization()) for _ in range(20)]
    await wait_for_logins(endpoint, 1)
    endpoint.gate.set()
    assert set(await asyncio.gather(*waiting)) == {"Bearer appliance-token-1"}
    assert await credential.authorization() == "Bearer appliance-token-1"
    assert len(endpoint.logins) == 1


async def test_the_password_grant_sends_the_user_and_a_basic_public_client(
    endpoint: TokenEndpoint, clock: Clock, credentials: list[OAuthCredential]
) -> None:
    """SimpliVity: grant_type=password, username, password, HTTP Basic ``simplivity:``."""
    credential = open_login(credentials, password_login(endpoint.url, client_id="simplivity"), clock)
    await credential.authorization()
    [login] = endpoint.logins
    assert login.form == {"grant_type": ["password"], "username": ["svc-labgate"], "password": [PASSWORD]}
    assert login.authorization == "Basic " + base64.b64encode(b"simplivity:").decode()


async def test_the_client_credentials_grant_with_basic_client_auth(
    endpoint: TokenEndpoint, clock: Clock, credentials: list[OAuthCredential]
) -> None:
    settings = OAuthCredentialSettings(
        endpoint.url, "client_credentials", client_id="lab gate", client_secret=CLIENT_SECRET, scope="read write"
    )
    await open_login(credentials, settings, clock).authorization()
    [login] = endpoint.logins
    assert login.form == {"grant_type": ["client_credentials"], "scope": ["read write"]}
    # RFC 6749 section 2.3.1: form-encoded, then Basic.
    assert login.authorization == "Basic " + base64.b64encode(f"lab+gate:{CLIENT_SECRET}".encode()).decode()


async def test_post_client_auth_puts_the_client_in_the_form_with_extra_parameters(
    endpoint: TokenEndpoint, clock: Clock, credentials: list[OAuthCredential]
) -> None:
    """HCP: the client and a realm in the form."""
    settings = password_login(
        endpoint.url, client_id="hcp", client_secret=CLIENT_SECRET, client_auth="post", scope="*", parameters=(("realm", "local"),)
    )
    await open_login(credentials, settings, clock).authorization()
    [login] = endpoint.logins
    assert login.authorization is None
    assert login.form == {
        "grant_type": ["password"], "username": ["svc-labgate"], "password": [PASSWORD], "scope": ["*"],
        "realm": ["local"], "client_id": ["hcp"], "client_secret": [CLIENT_SECRET],
    }


async def test_the_token_is_renewed_before_it_expires_while_requests_keep_using_it(
    endpoint: TokenEndpoint, clock: Clock, credentials: list[OAuthCredential]
) -> None:
    endpoint.expires_in = 600  # default margin: 60 s
    credential = open_login(credentials, password_login(endpoint.url), clock)
    assert await credential.authorization() == "Bearer appliance-token-1"
    clock.now += 539
    assert await credential.authorization() == "Bearer appliance-token-1"
    assert len(endpoint.logins) == 1
    endpoint.gate = asyncio.Event()
    clock.now += 1  # renew_at: a login starts, the request still goes with the valid token
    assert await credential.authorization() == "Bearer appliance-token-1"
    await wait_for_logins(endpoint, 2)
    assert await credential.authorization() == "Bearer appliance-token-1"  # the renewal is in flight: no second one
    endpoint.gate.set()
    await settle(credential)
    assert await credential.authorization() == "Bearer appliance-token-2"
    assert len(endpoint.logins) == 2


async def test_renew_before_as_a_share_of_the_lifetime(
    endpoint: TokenEndpoint, clock: Clock, credentials: list[OAuthCredential]
) -> None:
    endpoint.expires_in = "1000"  # some appliances send a string
    credential = open_login(credentials, password_login(endpoint.url, renew_fraction=0.25), clock)
    await credential.authorization()
    clock.now += 749
    await credential.authorization()
    assert len(endpoint.logins) == 1
    clock.now += 1
    await credential.authorization()
    await settle(credential)
    assert len(endpoint.logins) == 2


async def test_an_expired_token_is_never_sent_a_request_waits_for_the_login(
    endpoint: TokenEndpoint, clock: Clock, credentials: list[OAuthCredential]
) -> None:
    endpoint.expires_in = 100
    credential = open_login(credentials, password_login(endpoint.url), clock)
    await credential.authorization()
    clock.now += 100
    assert await credential.authorization() == "Bearer appliance-token-2"


async def test_an_answer_without_expires_in_is_held_five_minutes(
    endpoint: TokenEndpoint, clock: Clock, credentials: list[OAuthCredential]
) -> None:
    endpoint.expires_in = None
    credential = open_login(credentials, password_login(endpoint.url, renew_before=1.0), clock)
    await credential.authorization()
    clock.now += 298
    await credential.authorization()
    assert len(endpoint.logins) == 1
    clock.now += 2
    assert await credential.authorization() == "Bearer appliance-token-2"


async def test_a_token_left_idle_is_replaced(endpoint: TokenEndpoint, clock: Clock, credentials: list[OAuthCredential]) -> None:
    """SimpliVity ends a token after 10 minutes without use."""
    credential = open_login(credentials, password_login(endpoint.url, idle_timeout=540.0), clock)
    await credential.authorization()
    for _ in range(3):
        clock.now += 500
        assert await credential.authorization() == "Bearer appliance-token-1"  # used: the idle time starts over
    clock.now += 540
    assert await credential.authorization() == "Bearer appliance-token-2"


async def test_a_401_drops_the_held_token_so_the_next_request_logs_in_again(
    endpoint: TokenEndpoint, clock: Clock, credentials: list[OAuthCredential]
) -> None:
    credential = open_login(credentials, password_login(endpoint.url), clock)
    first = await credential.authorization()
    credential.rejected("Bearer some-older-token")  # not the held one: kept
    assert await credential.authorization() == first
    credential.rejected(first)
    assert await credential.authorization() == "Bearer appliance-token-2"
    assert len(endpoint.logins) == 2


async def test_a_refused_login_is_unavailable_and_retried_with_growing_pauses(
    endpoint: TokenEndpoint, clock: Clock, credentials: list[OAuthCredential], caplog: pytest.LogCaptureFixture
) -> None:
    endpoint.status = 400
    credential = open_login(credentials, password_login(endpoint.url, client_id="c", client_secret=CLIENT_SECRET), clock)
    with pytest.raises(CredentialUnavailable) as refused:
        await credential.authorization()
    assert "the token endpoint answered 400" in refused.value.detail
    for pause in (1, 2, 4, 8):
        with pytest.raises(CredentialUnavailable) as waiting:
            await credential.authorization()  # within the pause: refused at once, nothing sent
        assert "the next attempt is in" in waiting.value.detail
        clock.now += pause - 0.5
        with pytest.raises(CredentialUnavailable):
            await credential.authorization()
        logins = len(endpoint.logins)
        clock.now += 0.5
        with pytest.raises(CredentialUnavailable):
            await credential.authorization()
        assert len(endpoint.logins) == logins + 1
    endpoint.status = 200
    clock.now += 16
    assert (await credential.authorization(), len(endpoint.logins)) == ("Bearer appliance-token-6", 6)
    assert_nothing_secret(caplog, refused.value.detail, waiting.value.detail)


async def test_a_failed_renewal_keeps_the_valid_token_until_it_expires(
    endpoint: TokenEndpoint, clock: Clock, credentials: list[OAuthCredential]
) -> None:
    endpoint.expires_in = 600
    credential = open_login(credentials, password_login(endpoint.url), clock)
    await credential.authorization()
    endpoint.status = 503
    clock.now += 540
    assert await credential.authorization() == "Bearer appliance-token-1"
    await settle(credential)
    assert await credential.authorization() == "Bearer appliance-token-1"  # within the pause: no new attempt
    assert len(endpoint.logins) == 2
    clock.now += 60
    with pytest.raises(CredentialUnavailable):
        await credential.authorization()


@pytest.mark.parametrize(
    "answer, detail",
    [
        (b"<html>login</html>", "the token answer is not JSON"),
        (["access_token"], "the token answer is not a JSON object"),
        ({"token_type": "bearer"}, "no usable access_token"),
        ({"access_token": ""}, "no usable access_token"),
        ({"access_token": "two words"}, "no usable access_token"),
        ({"access_token": "abc\r\nX-Injected: 1"}, "no usable access_token"),
        ({"access_token": "a" * 20000}, "no usable access_token"),
        ({"access_token": "abc", "token_type": "mac"}, "token_type is not Bearer"),
        (b"{" + b" " * (70 * 1024) + b"}", "the token answer is too large"),
    ],
    ids=["html", "json_list", "no_token", "empty_token", "space_in_token", "header_injection", "huge_token", "mac_token", "huge_answer"],
)
async def test_an_unusable_answer_is_a_failed_login(
    endpoint: TokenEndpoint, clock: Clock, credentials: list[OAuthCredential], answer: Any, detail: str
) -> None:
    endpoint.answer = answer
    with pytest.raises(CredentialUnavailable) as refused:
        await open_login(credentials, password_login(endpoint.url), clock).authorization()
    assert detail in refused.value.detail


async def test_an_unreachable_token_endpoint_is_a_failed_login(clock: Clock, credentials: list[OAuthCredential]) -> None:
    credential = open_login(credentials, password_login(f"http://127.0.0.1:{free_port()}/token"), clock)
    with pytest.raises(CredentialUnavailable) as refused:
        await credential.authorization()
    assert "the token endpoint cannot be reached (ClientConnectorError)" in refused.value.detail


async def test_a_token_endpoint_slower_than_the_timeout_is_a_failed_login(
    endpoint: TokenEndpoint, clock: Clock, credentials: list[OAuthCredential]
) -> None:
    endpoint.gate = asyncio.Event()  # never set: the endpoint never answers
    credential = open_login(credentials, password_login(endpoint.url, timeout=0.2), clock)
    with pytest.raises(CredentialUnavailable) as refused:
        await credential.authorization()
    assert "cannot be reached (" in refused.value.detail
    endpoint.gate.set()


async def test_a_redirect_is_not_followed(clock: Clock, credentials: list[OAuthCredential]) -> None:
    """The password never goes anywhere but the configured token endpoint."""
    followed: list[str] = []

    async def elsewhere(request: web.Request) -> web.Response:
        followed.append(request.path)
        return web.json_response({"access_token": "stolen"})

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=307, headers={"Location": "/elsewhere"})

    app = web.Application()
    app.router.add_post("/token", redirect)
    app.router.add_post("/elsewhere", elsewhere)
    async with app_on_loopback(app) as url:
        with pytest.raises(CredentialUnavailable) as refused:
            await open_login(credentials, password_login(f"{url}/token"), clock).authorization()
    assert "answered 307" in refused.value.detail and followed == []


async def test_no_log_line_or_error_carries_the_password_secret_or_token(
    endpoint: TokenEndpoint, clock: Clock, credentials: list[OAuthCredential], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    credential = open_login(credentials, password_login(endpoint.url, client_id="c", client_secret=CLIENT_SECRET), clock)
    token = await credential.authorization()
    credential.rejected(token)
    endpoint.status = 401
    with pytest.raises(CredentialUnavailable) as refused:
        await credential.authorization()
    assert "login" in caplog.text  # it does log, just never a secret
    assert_nothing_secret(caplog, refused.value.detail, repr(credential), repr(credential.settings))
    assert "appliance-token" not in caplog.text + refused.value.detail


def assert_nothing_secret(caplog: pytest.LogCaptureFixture, *texts: str) -> None:
    everything = caplog.text + "\n".join(texts)
    assert PASSWORD not in everything and CLIENT_SECRET not in everything
