"""The observe source without a server: what a token request says, what an answer teaches, what is remembered."""

from __future__ import annotations

import base64

import pytest

from proxy.reasons import Reason
from proxy.store.memory import MemoryStore
from proxy.store.redis import RedisStore
from proxy.token_facts import TokenFacts, TokenRejection, token_fingerprint
from proxy.tokens.matchers import TypeRule, compile_conditions
from proxy.tokens.observe import (
    REFRESH_KEY_PREFIX,
    BadTokenRequest,
    ObserveSource,
    ObserveSourceSettings,
    basic_client_id,
    read_token_answer,
    read_token_request,
    token_endpoint_segments,
    token_endpoint_spellings,
)
from tests.clock import Clock
from tests.conftest import free_port

FORM = "application/x-www-form-urlencoded"
SETTINGS = ObserveSourceSettings(
    token_endpoint="/auth/oauth",
    type_rules=(
        TypeRule("emergency", compile_conditions({"grant_type": "emergency"})),
        TypeRule("password", compile_conditions({"grant_type": "password", "realm": {"in": ["Local", "marketing"]}})),
    ),
    max_lifetime=3600.0,
)


def test_a_token_request_keeps_the_grant_and_drops_every_secret() -> None:
    request = read_token_request(
        b"grant_type=password&username=user1&password=password1&scope=*&client_secret=my-secret&client_id=my-client&realm=marketing",
        FORM + "; charset=UTF-8",
        None,
    )
    assert dict(request.grant) == {
        "grant_type": "password", "username": "user1", "client_id": "my-client", "scope": "*", "realm": "marketing"
    }
    assert request.refresh_key is None


def test_a_refresh_request_is_known_by_its_refresh_token_fingerprint() -> None:
    request = read_token_request(b"grant_type=refresh_token&refresh_token=r-1", FORM, None)
    assert request.refresh_key == REFRESH_KEY_PREFIX + token_fingerprint("r-1")
    assert "refresh_token" not in request.grant


@pytest.mark.parametrize(
    "body, content_type, basic",
    [
        (b"grant_type=password&grant_type=emergency", FORM, None),
        (b"grant_type=emergency&username=a&username=b", FORM, None),
        (b"username=a", FORM, None),
        (b"grant_type=", FORM, None),
        (b"", FORM, None),
        (b"grant_type=emergency", "application/json", None),
        (b"grant_type=emergency", "", None),
        (b"grant_type=emergency&%ff=1", FORM, None),
        (b"grant_type=emergency&a", FORM, None),
        (b"grant_type=emergency&client_id=x", FORM, "simplivity"),
        (b"&".join([b"grant_type=emergency"] + [b"f%d=1" % i for i in range(100)]), FORM, None),
    ],
    ids=["two-grant-types", "two-usernames", "no-grant-type", "empty-grant-type", "empty-body", "json", "no-content-type",
         "non-utf8-name", "field-without-value-separator", "client-id-differs-from-basic", "too-many-fields"],
)
def test_an_ambiguous_or_malformed_token_request_is_refused(body: bytes, content_type: str, basic: str | None) -> None:
    with pytest.raises(BadTokenRequest):
        read_token_request(body, content_type, basic)


def test_the_basic_client_id_joins_the_grant() -> None:
    request = read_token_request(b"grant_type=emergency&username=svtcli&password=x", FORM, "simplivity")
    assert request.grant["client_id"] == "simplivity"


@pytest.mark.parametrize(
    "path, segments",
    [("/auth/oauth/", ("auth", "oauth", "")), ("/auth/oauth", ("auth", "oauth")), ("/api/oauth/token", ("api", "oauth", "token"))],
)
def test_a_token_endpoint_keeps_its_trailing_slash(path: str, segments: tuple[str, ...]) -> None:
    """The configured spelling is kept as written, as everywhere in labgate."""
    assert token_endpoint_segments(path) == segments


@pytest.mark.parametrize("configured", ["/auth/oauth/", "/auth/oauth"])
def test_the_token_endpoint_is_taken_with_or_without_its_trailing_slash(configured: str) -> None:
    """HCP: "you send an HTTP POST request to the method /auth/oauth" -- and its clients send /auth/oauth/ too."""
    spellings = token_endpoint_spellings(token_endpoint_segments(configured))
    assert set(spellings) == {("auth", "oauth"), ("auth", "oauth", "")}
    assert token_endpoint_spellings(token_endpoint_segments("/")) == ((),)


@pytest.mark.parametrize(
    "header, client_id",
    [
        ("Basic " + base64.b64encode(b"simplivity:").decode(), "simplivity"),
        ("basic " + base64.b64encode(b"my%20client:secret").decode(), "my client"),
        ("Basic " + base64.b64encode(b"no-colon").decode(), None),
        ("Basic !!!", None),
        ("Bearer abc", None),
        (None, None),
    ],
)
def test_basic_client_id(header: str | None, client_id: str | None) -> None:
    assert basic_client_id(header) == client_id


def test_a_token_answer_is_remembered_by_fingerprints_only() -> None:
    issued = read_token_answer(b'{"access_token":"eyJr287bjle","expires_in":7200,"refresh_token":"r-2"}')
    assert issued.access_key == token_fingerprint("eyJr287bjle")
    assert issued.expires_in == 7200.0
    assert issued.refresh_key == REFRESH_KEY_PREFIX + token_fingerprint("r-2")
    assert read_token_answer(b'{"access_token":"t","expires_in":"81301"}').expires_in == 81301.0
    assert read_token_answer(b'{"access_token":"t","expires_in":true}').expires_in is None
    assert read_token_answer(b'{"access_token":"t","expires_in":-5}').expires_in is None


@pytest.mark.parametrize("body", [b"[]", b'{"token_type":"bearer"}', b'{"access_token":""}', b'{"access_token":7}', b"nope"])
def test_an_answer_without_an_access_token_teaches_nothing(body: bytes) -> None:
    with pytest.raises(ValueError):
        read_token_answer(body)


async def learn(source: ObserveSource, body: bytes, answer: bytes) -> str | None:
    granted = await source.granted_as(read_token_request(body, FORM, None))
    if granted is None:
        return None
    await source.remember(granted, read_token_answer(answer))
    return granted.token_type


async def test_a_learned_token_is_known_until_its_expiry_and_only_to_its_upstream() -> None:
    store, clock = MemoryStore(), Clock(1_000_000.0)
    source = ObserveSource(SETTINGS, store, upstream="hcp", clock=clock)
    other = ObserveSource(SETTINGS, store, upstream="other", clock=clock)
    assert await learn(source, b"grant_type=password&username=user1&password=p&realm=Local&client_id=c", b'{"access_token":"tok-1","expires_in":7200}') == "password"
    facts = await source.verify("tok-1")
    assert isinstance(facts, TokenFacts)
    assert (facts.token_type, facts.subject, facts.issued_at, facts.expires_at) == ("password", "user1", clock.now, clock.now + 3600)
    assert facts.claims["client_id"] == "c"
    assert isinstance(await other.verify("tok-1"), TokenRejection)
    clock.now += 3600  # capped by max_lifetime, below the appliance's 7200
    fresh = ObserveSource(SETTINGS, store, upstream="hcp", clock=clock)
    rejection = await fresh.verify("tok-1")
    assert isinstance(rejection, TokenRejection) and rejection.reason is Reason.UNKNOWN_TOKEN


async def test_a_grant_no_rule_maps_yields_no_type() -> None:
    source = ObserveSource(SETTINGS, MemoryStore(), upstream="hcp", clock=Clock(1_000_000.0))
    assert await learn(source, b"grant_type=password&username=u&password=p&realm=Other", b'{"access_token":"t"}') is None
    assert await learn(source, b"grant_type=client_credentials", b'{"access_token":"t"}') is None


async def test_a_refreshed_token_keeps_the_type_of_the_token_it_renews() -> None:
    store, clock = MemoryStore(), Clock(1_000_000.0)
    source = ObserveSource(SETTINGS, store, upstream="hcp", clock=clock)
    await learn(source, b"grant_type=emergency&username=svtcli&password=p", b'{"access_token":"a-1","refresh_token":"r-1"}')
    assert await learn(source, b"grant_type=refresh_token&refresh_token=r-1", b'{"access_token":"a-2","refresh_token":"r-2"}') == "emergency"
    renewed = await source.verify("a-2")
    assert isinstance(renewed, TokenFacts) and renewed.token_type == "emergency" and renewed.subject == "svtcli"
    # A refresh token is never an access token.
    refused = await source.verify("r-1")
    assert isinstance(refused, TokenRejection) and refused.reason is Reason.UNKNOWN_TOKEN
    # A refresh token labgate never saw maps by the rules, which know no refresh grant here.
    assert await learn(source, b"grant_type=refresh_token&refresh_token=r-unknown", b'{"access_token":"a-3"}') is None


async def test_forgetting_a_token_revokes_it_for_every_replica() -> None:
    store, clock = MemoryStore(), Clock(1_000_000.0)
    source = ObserveSource(SETTINGS, store, upstream="hcp", clock=clock)
    await learn(source, b"grant_type=emergency&username=svtcli&password=p", b'{"access_token":"a-1","expires_in":600}')
    facts = await source.verify("a-1")
    assert isinstance(facts, TokenFacts)
    await source.forget("a-1", facts)
    assert await store.revoked_at("token", token_fingerprint("a-1"), clock.now) == clock.now
    rejection = await source.verify("a-1")
    assert isinstance(rejection, TokenRejection) and rejection.reason is Reason.UNKNOWN_TOKEN


async def test_an_unreachable_store_fails_closed() -> None:
    store = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    source = ObserveSource(SETTINGS, store, upstream="hcp")
    try:
        rejection = await source.verify("a-1")
    finally:
        await store.close()
    assert isinstance(rejection, TokenRejection) and rejection.reason is Reason.STORE_UNAVAILABLE


async def test_an_overlong_token_is_malformed_without_a_store_lookup() -> None:
    source = ObserveSource(SETTINGS, MemoryStore(), upstream="hcp")
    rejection = await source.verify("x" * 9000)
    assert isinstance(rejection, TokenRejection) and rejection.reason is Reason.MALFORMED_TOKEN
