"""requests-oauthlib against labgate's token service, unchanged, over TLS.

Client credentials by HTTP Basic (its default) and in the body
(``include_client_id``), the password grant (``LegacyApplicationClient``),
auto-refresh with rotation, a reused refresh token surfacing as oauthlib's own
``InvalidGrantError``, and calls through labgate with the session.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from oauthlib.oauth2 import BackendApplicationClient, LegacyApplicationClient
from oauthlib.oauth2.rfc6749.errors import (
    InvalidClientError,
    InvalidGrantError,
    OAuth2Error,
)
from requests_oauthlib import OAuth2Session

from tests.conftest import GatewayStarter, RecordingUpstream
from tests.gateway.oauth_clients import (
    PASSWORD,
    TlsLab,
    in_thread,
    start_tls_token_service,
)


@pytest.fixture
async def lab(start_http1_gateway: GatewayStarter, upstream: RecordingUpstream, tmp_path: Path) -> TlsLab:
    lab = await start_tls_token_service(start_http1_gateway, tmp_path, upstream)
    await in_thread(lab.add_alice)
    return lab


def oauth_error(call: Any) -> tuple[type[OAuth2Error], int]:
    """The oauthlib error ``call`` raises, and its status.

    Caught in the thread and not kept: a live traceback would hold the client's TLS connection open past the test.
    """
    try:
        call()
    except OAuth2Error as exc:
        return type(exc), exc.status_code
    raise AssertionError("labgate answered with a token")


@pytest.mark.parametrize("in_body", [False, True], ids=["client_secret_basic", "client_secret_post"])
async def test_client_credentials_basic_and_in_the_body_then_a_call_through_labgate(
    lab: TlsLab, upstream: RecordingUpstream, in_body: bool
) -> None:
    client_id, secret = await in_thread(lab.add_client)

    def run() -> tuple[dict[str, Any], int, Any]:
        with lab.trusting(OAuth2Session(client=BackendApplicationClient(client_id=client_id))) as session:
            token = session.fetch_token(
                lab.token_endpoint, client_id=client_id, client_secret=secret, include_client_id=in_body, timeout=10
            )
            answer = session.get(lab.hosts, timeout=10)
            return dict(token), answer.status_code, answer.json()

    token, status, body = await in_thread(run)
    assert (token["token_type"], token["scope"]) == ("Bearer", ["api-client"]) and "refresh_token" not in token
    assert status == 200 and body["path"] == "/api/hosts"
    assert [r.raw_path for r in upstream.received] == ["/api/hosts"]


async def test_wrong_secret_is_oauthlibs_invalid_client(lab: TlsLab) -> None:
    client_id, _ = await in_thread(lab.add_client)

    def run() -> tuple[type[OAuth2Error], int]:
        with lab.trusting(OAuth2Session(client=BackendApplicationClient(client_id=client_id))) as session:
            return oauth_error(lambda: session.fetch_token(lab.token_endpoint, client_id=client_id, client_secret="wrong", timeout=10))

    assert await in_thread(run) == (InvalidClientError, 401)


async def test_password_grant_auto_refresh_rotates_and_reuse_is_invalid_grant(lab: TlsLab, upstream: RecordingUpstream) -> None:
    """requests-oauthlib renews a token it sees expired, by itself; a reused refresh token ends the chain.

    The client is told its token expired (``expires_at`` in the past): labgate's tokens live 15 minutes.
    """
    saved: list[dict[str, Any]] = []

    def run() -> tuple[list[int], tuple[type[OAuth2Error], int], int, tuple[type[OAuth2Error], int]]:
        client = LegacyApplicationClient(client_id="lab-cli")
        with lab.trusting(OAuth2Session(client=client, auto_refresh_url=lab.token_endpoint, token_updater=saved.append)) as session:
            first = dict(session.fetch_token(lab.token_endpoint, username="alice", password=PASSWORD, timeout=10))
            statuses = []
            for _ in range(2):
                session.token = {**session.token, "expires_at": time.time() - 1}
                statuses.append(session.get(lab.hosts, timeout=10).status_code)
            reused = oauth_error(lambda: session.refresh_token(lab.token_endpoint, refresh_token=first["refresh_token"], timeout=10))
            newest = dict(session.token)
            dead = lab.get(lab.hosts, newest["access_token"]).status_code
            ended = oauth_error(lambda: session.refresh_token(lab.token_endpoint, refresh_token=newest["refresh_token"], timeout=10))
            return statuses, reused, dead, ended

    statuses, reused, dead, ended = await in_thread(run)
    assert statuses == [200, 200]
    assert len(saved) == 2 and len({token["refresh_token"] for token in saved}) == 2  # rotated on each renewal
    assert reused == ended == (InvalidGrantError, 400)
    assert dead == 401  # the whole chain died, the newest access token with it
    assert [r.raw_path for r in upstream.received] == ["/api/hosts", "/api/hosts"]


async def test_a_public_client_id_with_a_space_and_a_colon_logs_in(lab: TlsLab) -> None:
    """RFC 6749 appendix A.1: client-id = *VSCHAR.  In the body: requests-oauthlib's HTTP Basic does not
    form-urlencode the id first (RFC 6749 section 2.3.1), so a ':' in it would read as the secret's start."""

    def run() -> dict[str, Any]:
        with lab.trusting(OAuth2Session(client=LegacyApplicationClient(client_id="lab cli:2"))) as session:
            return dict(session.fetch_token(
                lab.token_endpoint, username="alice", password=PASSWORD, include_client_id=True, timeout=10
            ))

    token = await in_thread(run)
    assert token["token_type"] == "Bearer" and token["refresh_token"]
