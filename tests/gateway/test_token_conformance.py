"""labgate's token endpoint where RFC 6749 and RFC 8707 leave no choice: over real HTTP.

RFC 8707 ``resource`` beside labgate's ``audience``, unsupported grant URNs
named in full, and public client ids with every character RFC 6749's
client-id grammar allows.
"""

from __future__ import annotations

import urllib.parse
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.conftest import GatewayStarter, RecordingUpstream, RunningGateway, free_port
from tests.gateway.token_service import (
    EMERGENCY,
    GRANTS,
    ISSUER_SOURCE,
    ISSUER_URL,
    LAB_PACK,
    admin_call,
    api_get,
    basic,
    issuer_section,
    token_call,
)

PASSWORD = "alice's password"
LOGIN = {"grant_type": "password", "username": "alice", "password": PASSWORD}


def aud(token: str) -> Any:
    return jwt.decode(token, options={"verify_signature": False})["aud"]


def refused(answer: tuple[int, dict[str, str], Any]) -> tuple[int, str, str]:
    status, headers, body = answer
    assert set(body) == {"error", "error_description", "reason", "request_id"}
    assert headers["Cache-Control"] == "no-store"
    return status, body["error"], body["reason"]


@pytest.fixture
async def two(start_http1_gateway: GatewayStarter, upstream: RecordingUpstream, tmp_path: Path) -> RunningGateway:
    """Two issuer upstreams: "demo" at /demo and "lab2" at /lab2 (audience "lab-two"); alice may log in."""
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "lab.yaml").write_text(LAB_PACK)
    upstreams = [
        {"name": "demo", "url": upstream.url, "path_prefix": "/demo", "pack": "lab", "token_source": ISSUER_SOURCE},
        {
            "name": "lab2", "url": upstream.url, "path_prefix": "/lab2", "pack": "lab",
            "token_source": {"type": "issuer", "audience": "lab-two", "grants": GRANTS},
        },
    ]
    running = await start_http1_gateway(
        upstream.url, upstreams=upstreams, issuer=issuer_section(), listen={"address": "127.0.0.1", "port": free_port()}
    )
    assert (await admin_call(running, "POST", "/subjects", body={"name": "alice", "password": PASSWORD}))[0] == 201
    return running


# -- RFC 8707 resource indicators ---------------------------------------------------


async def test_the_resource_parameter_picks_the_upstream_like_audience(two: RunningGateway, upstream: RecordingUpstream) -> None:
    """RFC 8707 section 2: "resource ... Indicates the target service or resource to which access is being requested.
    Its value MUST be an absolute URI"; labgate's URI for an upstream is where clients reach it through labgate."""
    for resource, expected in ((f"{ISSUER_URL}/lab2", "lab-two"), (f"{ISSUER_URL}/demo/api/hosts", "demo")):
        status, _, body = await token_call(two, {**LOGIN, "resource": resource})
        assert status == 200 and aud(body["access_token"]) == expected
    status, _, body = await token_call(two, {**LOGIN, "resource": f"{ISSUER_URL}/lab2", "audience": "lab-two"})
    assert status == 200 and aud(body["access_token"]) == "lab-two"
    assert (await api_get(two, "/lab2/api/hosts", body["access_token"]))[0] == 200
    assert [r.raw_path for r in upstream.received] == ["/api/hosts"]


async def test_resource_may_repeat_when_every_value_names_the_same_upstream(two: RunningGateway) -> None:
    """RFC 8707 section 2: "Multiple resource parameters MAY be used"; a labgate token is for one upstream."""
    same = urllib.parse.urlencode([*LOGIN.items(), ("resource", f"{ISSUER_URL}/lab2"), ("resource", f"{ISSUER_URL}/lab2/api")])
    status, _, body = await token_call(two, same.encode())
    assert status == 200 and aud(body["access_token"]) == "lab-two"
    both = urllib.parse.urlencode([*LOGIN.items(), ("resource", f"{ISSUER_URL}/lab2"), ("resource", f"{ISSUER_URL}/demo")])
    assert refused(await token_call(two, both.encode())) == (400, "invalid_target", "targets_differ")


async def test_audience_and_resource_naming_different_upstreams_is_invalid_target(two: RunningGateway) -> None:
    form = {**LOGIN, "audience": "demo", "resource": f"{ISSUER_URL}/lab2"}
    assert refused(await token_call(two, form)) == (400, "invalid_target", "targets_differ")


@pytest.mark.parametrize(
    "resource",
    ["lab2", f"{ISSUER_URL}/lab2#frag", f"{ISSUER_URL}/nowhere", "https://evil.example/lab2", f"{ISSUER_URL}/demo/../lab2"],
    ids=["not-absolute", "fragment", "no-upstream", "other-host", "dot-segments"],
)
async def test_a_resource_labgate_cannot_issue_for_is_invalid_target(two: RunningGateway, resource: str) -> None:
    """RFC 8707 section 2: "invalid_target: The requested resource is invalid, missing, unknown, or malformed"."""
    status, error, reason = refused(await token_call(two, {**LOGIN, "resource": resource}))
    assert (status, error, reason) == (400, "invalid_target", "unknown_audience")


async def test_a_renewal_may_name_its_chains_upstream_by_resource_but_no_other(two: RunningGateway) -> None:
    """RFC 8707 section 2.2: a refresh request's resource must be one the original grant was for."""
    _, _, first = await token_call(two, {**LOGIN, "audience": "lab2"})
    wrong = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"], "resource": f"{ISSUER_URL}/demo"}
    assert refused(await token_call(two, wrong)) == (400, "invalid_target", "unknown_audience")
    right = {**wrong, "resource": f"{ISSUER_URL}/lab2"}
    status, _, renewed = await token_call(two, right)
    assert status == 200 and aud(renewed["access_token"]) == "lab-two"


# -- unsupported grants are named in full -------------------------------------------


@pytest.mark.parametrize(
    "grant_type",
    [
        "urn:ietf:params:oauth:grant-type:device_code",
        "urn:ietf:params:oauth:grant-type:jwt-bearer",
        "urn:ietf:params:oauth:grant-type:token-exchange",
    ],
)
async def test_an_unsupported_grant_urn_is_named_in_full(two: RunningGateway, grant_type: str) -> None:
    answer = await token_call(two, {"grant_type": grant_type})
    assert refused(answer) == (400, "unsupported_grant_type", "unsupported_grant_type")
    assert answer[2]["error_description"] == f"grant_type '{grant_type}' is not supported"


@pytest.mark.parametrize("grant_type", ['say "hi"', "back\\slash", "x" * 129, "caf\u00e9"])
async def test_a_grant_type_error_description_could_not_carry_is_not_echoed(two: RunningGateway, grant_type: str) -> None:
    """RFC 6749 section 5.2: error_description is %x20-21 / %x23-5B / %x5D-7E."""
    answer = await token_call(two, {"grant_type": grant_type})
    assert refused(answer) == (400, "unsupported_grant_type", "unsupported_grant_type")
    assert answer[2]["error_description"] == "the grant_type is not supported"


# -- public client ids ----------------------------------------------------------------


@pytest.mark.parametrize("client_id", ["my app", "urn:lab:cli", "svc:ops team", "!#$%&'()*+,-./~"])
async def test_a_public_client_id_may_use_any_client_id_character(two: RunningGateway, client_id: str) -> None:
    """RFC 6749 appendix A.1: client-id = *VSCHAR, and VSCHAR = %x20-7E."""
    status, _, body = await token_call(two, {**LOGIN, "audience": "demo", "client_id": client_id})
    assert status == 200, body
    assert jwt.decode(body["access_token"], options={"verify_signature": False})["client_id"] == client_id
    encoded = urllib.parse.quote_plus(client_id)  # RFC 6749 section 2.3.1: form-urlencoded before Basic
    status, _, body = await token_call(two, {**LOGIN, "audience": "demo"}, authorization=basic(encoded, ""))
    assert status == 200, body
    renewal = {"grant_type": "refresh_token", "refresh_token": body["refresh_token"], "client_id": client_id}
    assert (await token_call(two, renewal))[0] == 200


@pytest.mark.parametrize(
    "client_id, secret",
    [("my app", "a secret"), ("tab\there", ""), ("x" * 256, ""), ("caf\u00e9", "")],
    ids=["space-with-secret", "control-character", "too-long", "not-ascii"],
)
async def test_client_ids_no_client_can_hold_are_invalid_client(two: RunningGateway, client_id: str, secret: str) -> None:
    form = {**LOGIN, "audience": "demo", "client_id": client_id, **({"client_secret": secret} if secret else {})}
    answer = await token_call(two, form)
    assert refused(answer) == (401, "invalid_client", "client_authentication_failed")
    assert answer[1]["WWW-Authenticate"] == 'Basic realm="labgate", charset="UTF-8"'


async def test_the_emergency_grant_takes_a_public_client_with_a_colon(two: RunningGateway) -> None:
    form = {"grant_type": "emergency", "username": EMERGENCY[0], "password": EMERGENCY[1], "audience": "demo"}
    status, _, body = await token_call(two, form, authorization=basic(urllib.parse.quote_plus("svt:cli"), ""))
    assert status == 200, body
