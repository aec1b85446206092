"""Through real sockets: a request without a usable token is answered 401 with its challenge, and never forwarded."""

from __future__ import annotations

import pytest

from tests.conftest import GatewayStarter, RecordingUpstream, mint, raw_request
from tests.gateway.test_end_to_end import get


@pytest.mark.parametrize(
    "headers, reason",
    [
        ({"Authorization": "Bearer"}, "malformed_authorization"),
        ({"Authorization": "Bearer a b"}, "malformed_authorization"),
        ({"Authorization": "Bearer not-a-jwt"}, "malformed_token"),
    ],
    ids=["empty_bearer", "two_words", "not_a_jwt"],
)
async def test_bad_authorization_is_401_with_www_authenticate(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, headers: dict[str, str], reason: str
) -> None:
    gateway = await start_gateway(upstream.url)
    status, body, response_headers = await get(f"{gateway.url}/demo/api/hosts", headers=headers)
    assert status == 401
    assert body["reason"] == reason
    assert response_headers["WWW-Authenticate"].startswith('Bearer realm="labgate", error="invalid_')
    assert upstream.received == []


async def test_no_credentials_get_the_bare_challenge(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    """RFC 6750 section 3.1: "If the request lacks any authentication information (e.g., the client
    was unaware that authentication is necessary or attempted using an unsupported authentication
    method), the resource server SHOULD NOT include an error code or other error information."
    """
    gateway = await start_gateway(upstream.url)
    status, body, response_headers = await get(f"{gateway.url}/demo/api/hosts")
    assert (status, body["reason"], body["error"]) == (401, "missing_token", "invalid_request")
    assert response_headers["WWW-Authenticate"] == 'Bearer realm="labgate"'
    assert upstream.received == []


async def test_another_authentication_method_gets_the_bare_challenge(
    upstream: RecordingUpstream, start_gateway: GatewayStarter
) -> None:
    """RFC 6750 section 3.1: a client that "attempted using an unsupported authentication method" (Basic)
    lacks authentication information: the challenge carries no error code."""
    gateway = await start_gateway(upstream.url)
    status, body, response_headers = await get(f"{gateway.url}/demo/api/hosts", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert (status, body["reason"]) == (401, "missing_token")
    assert body["error_description"] == "the Authorization scheme must be Bearer"
    assert response_headers["WWW-Authenticate"] == 'Bearer realm="labgate"'
    assert upstream.received == []


async def test_two_authorization_headers_are_refused(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url)
    head = (
        f"GET /demo/api/hosts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {mint()}\r\n"
        f"Authorization: Bearer {mint({'role': 'admin'})}\r\nConnection: close\r\n\r\n"
    )
    response = await raw_request(gateway.port, head)
    assert (response.status, response.json()["reason"]) == (401, "malformed_authorization")
    assert upstream.received == []


async def test_token_in_query_string_is_refused(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url)
    status, body, _ = await get(f"{gateway.url}/demo/api/hosts?access_token=abc", mint({"role": "admin"}))
    assert (status, body["reason"]) == (401, "malformed_authorization")
    assert upstream.received == []


@pytest.mark.parametrize(
    "claims, reason",
    [
        ({"exp": 1000}, "token_expired"),
        ({"iss": "https://evil.example"}, "wrong_issuer"),
        ({"aud": "other"}, "wrong_audience"),
        ({"role": "nobody"}, "no_token_type"),
    ],
    ids=["expired", "wrong_issuer", "wrong_audience", "no_type"],
)
async def test_invalid_tokens_are_401_invalid_token(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, claims: dict[str, object], reason: str
) -> None:
    gateway = await start_gateway(upstream.url)
    status, body, headers = await get(f"{gateway.url}/demo/api/hosts", mint(claims))
    assert (status, body["reason"]) == (401, reason)
    assert 'error="invalid_token"' in headers["WWW-Authenticate"]
    assert upstream.received == []


async def test_token_signed_with_another_secret_is_refused(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url)
    status, body, _ = await get(f"{gateway.url}/demo/api/hosts", mint(secret="t" * 48))
    assert (status, body["reason"]) == (401, "bad_signature")
    assert upstream.received == []
