"""The introspect source against a real RFC 7662 endpoint on loopback."""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from dataclasses import dataclass, field, replace
from typing import Any

import pytest
from aiohttp import web

from proxy.reasons import Reason
from proxy.token_facts import TokenFacts, TokenRejection
from proxy.tokens.introspect import IntrospectSource, IntrospectSourceSettings
from proxy.tokens.matchers import TypeRule, compile_conditions
from tests.clock import Clock
from tests.conftest import app_on_loopback, free_port

CLIENT_ID, CLIENT_SECRET = "labgate", "introspection-secret"
NOW = 1_800_000_000.0


@dataclass
class AuthorizationServer:
    """Answers introspection requests from ``answers`` (token -> JSON) and records each call."""

    url: str = ""
    answers: dict[str, Any] = field(default_factory=dict)
    calls: list[dict[str, str]] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0

    async def introspect(self, request: web.Request) -> web.StreamResponse:
        form = dict(await request.post())
        basic = request.headers.get("Authorization", "")
        if basic.startswith("Basic "):
            user, _, secret = base64.b64decode(basic[6:]).decode().partition(":")
        else:
            user, secret = str(form.get("client_id", "")), str(form.get("client_secret", ""))
        self.calls.append({"client": user, "token": str(form.get("token", "")), "hint": str(form.get("token_type_hint", ""))})
        if (user, secret) != (CLIENT_ID, CLIENT_SECRET):
            return web.json_response({"error": "invalid_client"}, status=401)
        await asyncio.sleep(self.delay)
        if self.status != 200:
            return web.Response(status=self.status)
        answer = self.answers.get(str(form.get("token")), {"active": False})
        if isinstance(answer, bytes):
            return web.Response(body=answer, content_type="application/json")
        return web.json_response(answer)


@pytest.fixture
async def server() -> AsyncIterator[AuthorizationServer]:
    state = AuthorizationServer()
    app = web.Application()
    app.router.add_post("/oauth2/introspect", state.introspect)
    async with app_on_loopback(app) as url:
        state.url = f"{url}/oauth2/introspect"
        yield state


def settings(server: AuthorizationServer, **changes: Any) -> IntrospectSourceSettings:
    base = IntrospectSourceSettings(
        endpoint=server.url,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        type_rules=(
            TypeRule("custom", compile_conditions({"scope": {"contains": "custom"}})),
            TypeRule("all", compile_conditions({"scope": {"contains": "all"}})),
        ),
        path_prefixes_claim="allowed_endpoints",
        client_ips_claim="allowed_ips",
        cache_max_seconds=60.0,
        cache_negative_seconds=5.0,
    )
    return replace(base, **changes)


@pytest.fixture
async def source(server: AuthorizationServer) -> AsyncIterator[tuple[IntrospectSource, Clock]]:
    clock = Clock(NOW)
    introspect = IntrospectSource(settings(server), clock=clock)
    yield introspect, clock
    await introspect.close()


ACTIVE = {"active": True, "scope": "custom", "sub": "svc-backup", "client_id": "c1", "exp": NOW + 1800, "iat": NOW - 10,
          "allowed_endpoints": ["/Client", "/V4/ServerGroup"], "allowed_ips": ["10.0.0.1", "1.1.1.0 – 1.1.1.25"]}


async def test_an_active_token_becomes_facts_with_its_own_narrowing(
    server: AuthorizationServer, source: tuple[IntrospectSource, Clock]
) -> None:
    introspect, _ = source
    server.answers["tok-1"] = ACTIVE
    facts = await introspect.verify("tok-1")
    assert isinstance(facts, TokenFacts)
    assert (facts.token_type, facts.subject, facts.expires_at, facts.issued_at) == ("custom", "svc-backup", NOW + 1800, NOW - 10)
    assert facts.path_prefixes == ("/Client", "/V4/ServerGroup")
    assert facts.client_ips is not None
    assert server.calls == [{"client": CLIENT_ID, "token": "tok-1", "hint": "access_token"}]


async def test_client_secret_post_sends_the_credentials_in_the_body(server: AuthorizationServer) -> None:
    server.answers["tok-1"] = ACTIVE
    introspect = IntrospectSource(settings(server, client_auth="post"), clock=Clock(NOW))
    try:
        assert isinstance(await introspect.verify("tok-1"), TokenFacts)
    finally:
        await introspect.close()


@pytest.mark.parametrize(
    "answer, reason",
    [
        ({"active": False}, Reason.TOKEN_INACTIVE),
        ({"active": True, "scope": "custom", "exp": NOW - 1}, Reason.TOKEN_EXPIRED),
        ({"active": True, "scope": "custom", "nbf": NOW + 60}, Reason.TOKEN_NOT_YET_VALID),
        ({"active": True, "scope": "read"}, Reason.NO_TOKEN_TYPE),
        ({"active": True, "scope": "custom", "exp": "soon"}, Reason.MALFORMED_TOKEN),
        ({"active": True, "scope": "custom", "allowed_endpoints": ["/Client/../V4"]}, Reason.MALFORMED_TOKEN),
        ({"active": True, "scope": "custom", "allowed_ips": ["010.0.0.1"]}, Reason.MALFORMED_TOKEN),
        ({"active": "true", "scope": "custom"}, Reason.INTROSPECTION_UNAVAILABLE),
        (b"not json", Reason.INTROSPECTION_UNAVAILABLE),
        (b"[true]", Reason.INTROSPECTION_UNAVAILABLE),
    ],
    ids=["inactive", "expired", "not-yet-valid", "no-type", "bad-exp", "bad-prefix", "bad-ip", "active-not-boolean", "not-json", "not-object"],
)
async def test_refusals(
    server: AuthorizationServer, source: tuple[IntrospectSource, Clock], answer: Any, reason: Reason
) -> None:
    introspect, _ = source
    server.answers["tok-1"] = answer
    verdict = await introspect.verify("tok-1")
    assert isinstance(verdict, TokenRejection) and verdict.reason is reason
    assert "tok-1" not in verdict.detail


async def test_an_endpoint_that_cannot_be_asked_fails_closed_and_is_asked_again(
    server: AuthorizationServer, source: tuple[IntrospectSource, Clock]
) -> None:
    introspect, _ = source
    server.answers["tok-1"] = ACTIVE
    server.status = 500
    verdict = await introspect.verify("tok-1")
    assert isinstance(verdict, TokenRejection) and verdict.reason is Reason.INTROSPECTION_UNAVAILABLE
    server.status = 200
    assert isinstance(await introspect.verify("tok-1"), TokenFacts)
    assert len(server.calls) == 2


async def test_wrong_client_credentials_are_unavailable_not_inactive(server: AuthorizationServer) -> None:
    server.answers["tok-1"] = ACTIVE
    introspect = IntrospectSource(settings(server, client_secret="wrong"), clock=Clock(NOW))
    try:
        verdict = await introspect.verify("tok-1")
    finally:
        await introspect.close()
    assert isinstance(verdict, TokenRejection) and verdict.reason is Reason.INTROSPECTION_UNAVAILABLE


async def test_an_unreachable_endpoint_is_unavailable() -> None:
    server = AuthorizationServer(url=f"http://127.0.0.1:{free_port()}/oauth2/introspect")
    introspect = IntrospectSource(settings(server), clock=Clock(NOW))
    try:
        verdict = await introspect.verify("tok-1")
    finally:
        await introspect.close()
    assert isinstance(verdict, TokenRejection) and verdict.reason is Reason.INTROSPECTION_UNAVAILABLE


async def test_active_answers_are_cached_until_max_seconds_and_never_past_exp(
    server: AuthorizationServer, source: tuple[IntrospectSource, Clock]
) -> None:
    introspect, clock = source
    server.answers["long"] = {**ACTIVE, "exp": NOW + 3600}
    server.answers["short"] = {**ACTIVE, "exp": NOW + 20}
    for token in ("long", "short"):
        await introspect.verify(token)
        await introspect.verify(token)
    assert len(server.calls) == 2
    clock.now = NOW + 20  # 'short' has expired: asked again, and refused
    verdict = await introspect.verify("short")
    assert isinstance(verdict, TokenRejection) and verdict.reason is Reason.TOKEN_EXPIRED
    await introspect.verify("long")
    assert len(server.calls) == 3
    clock.now = NOW + 60  # max_seconds
    await introspect.verify("long")
    assert len(server.calls) == 4


async def test_inactive_answers_are_cached_briefly(server: AuthorizationServer, source: tuple[IntrospectSource, Clock]) -> None:
    introspect, clock = source
    await introspect.verify("bogus")
    await introspect.verify("bogus")
    assert len(server.calls) == 1
    clock.now = NOW + 5
    server.answers["bogus"] = ACTIVE  # activated meanwhile
    assert isinstance(await introspect.verify("bogus"), TokenFacts)
    assert len(server.calls) == 2


async def test_one_question_in_flight_per_token(server: AuthorizationServer, source: tuple[IntrospectSource, Clock]) -> None:
    introspect, _ = source
    server.answers["tok-1"] = ACTIVE
    server.delay = 0.2
    verdicts = await asyncio.gather(*(introspect.verify("tok-1") for _ in range(20)))
    assert all(isinstance(v, TokenFacts) for v in verdicts)
    assert len(server.calls) == 1


async def test_the_cache_is_bounded(server: AuthorizationServer) -> None:
    introspect = IntrospectSource(settings(server, cache_size=10), clock=Clock(NOW))
    try:
        for i in range(50):
            await introspect.verify(f"bogus-{i}")
        assert len(introspect._cache) <= 10
    finally:
        await introspect.close()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"endpoint": "http://idp.example/introspect"}, "https"),
        ({"endpoint": "ftp://idp.example/introspect"}, "https"),
        ({"client_secret": ""}, "client secret"),
        ({"type_rules": ()}, "types"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_settings_refuse_unsafe_or_incomplete_values(server: AuthorizationServer, changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        settings(server, **changes)


def test_the_client_secret_never_shows_in_a_repr(server: AuthorizationServer) -> None:
    assert CLIENT_SECRET not in repr(settings(server))


async def test_an_answer_split_on_the_wire_is_read_whole(server: AuthorizationServer) -> None:
    """A streamed answer arrives in pieces; all of them make the JSON."""

    async def streamed(request: web.Request) -> web.StreamResponse:
        await request.post()
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        for piece in (b'{"active": true, ', b'"scope": "custom", ', b'"sub": "svc"}'):
            await response.write(piece)
            await asyncio.sleep(0.01)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/introspect", streamed)
    async with app_on_loopback(app) as url:
        introspect = IntrospectSource(settings(server, endpoint=f"{url}/introspect"), clock=Clock(NOW))
        try:
            facts = await introspect.verify("tok-1")
        finally:
            await introspect.close()
    assert isinstance(facts, TokenFacts) and facts.subject == "svc"


async def test_an_oversized_answer_is_unavailable(server: AuthorizationServer, source: tuple[IntrospectSource, Clock]) -> None:
    introspect, _ = source
    server.answers["tok-1"] = {**ACTIVE, "padding": "x" * 70_000}
    verdict = await introspect.verify("tok-1")
    assert isinstance(verdict, TokenRejection) and verdict.reason is Reason.INTROSPECTION_UNAVAILABLE
