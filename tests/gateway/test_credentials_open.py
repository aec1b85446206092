"""Which credential an upstream gets, how its token endpoint is verified, and when a client's token goes upstream."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from proxy.config import Upstream, load_config
from proxy.credentials.oauth import OAuthCredential
from proxy.credentials.settings import OAuthCredentialSettings
from proxy.credentials.static import StaticCredential
from proxy.gateway.credentials_open import (
    forwards_client_authorization,
    open_credential,
    token_endpoint_tls,
)
from tests.conftest import write_config

ISSUER = {"url": "https://labgate.lab.example"}


def upstream_with(tmp_path: Path, url: str = "http://127.0.0.1:9", *, issuer: bool = False, **upstream: Any) -> Upstream:
    (tmp_path / "appliance.token").write_text("appliance-token\n")
    (tmp_path / "appliance.password").write_text("appliance-password\n")
    if issuer:
        upstream["token_source"] = {"type": "issuer"}
    extra = {"issuer": ISSUER} if issuer else {}
    return load_config(write_config(tmp_path, url, upstream=upstream, **extra)).upstreams[0]


BEARER = {"type": "bearer", "token_file": "appliance.token"}


@pytest.mark.parametrize(
    "issuer, credential, forwarded",
    [
        (False, None, True),  # a jwt upstream without a credential: the client's token goes on, as before
        (False, BEARER, False),  # a credential replaces it
        (True, None, False),  # labgate's own tokens never reach an appliance
        (True, BEARER, False),
    ],
    ids=["jwt", "jwt_with_credential", "issuer", "issuer_with_credential"],
)
def test_when_the_clients_authorization_reaches_the_appliance(
    tmp_path: Path, issuer: bool, credential: dict[str, Any] | None, forwarded: bool
) -> None:
    upstream = upstream_with(tmp_path, issuer=issuer, credential=credential)  # None: written as null, read as none
    assert forwards_client_authorization(upstream) is forwarded


async def test_each_kind_opens_its_credential(tmp_path: Path) -> None:
    assert open_credential(upstream_with(tmp_path)) is None
    assert isinstance(open_credential(upstream_with(tmp_path, credential=BEARER)), StaticCredential)
    basic = {"type": "basic", "username": "admin", "password_file": "appliance.password"}
    assert isinstance(open_credential(upstream_with(tmp_path, credential=basic)), StaticCredential)
    oauth = {
        "type": "oauth", "token_url": "http://127.0.0.1:9/token", "grant": "password",
        "username": "svc", "password_file": "appliance.password",
    }
    credential = open_credential(upstream_with(tmp_path, credential=oauth))
    assert isinstance(credential, OAuthCredential)
    await credential.close()


def oauth_at(token_url: str, **settings: Any) -> OAuthCredentialSettings:
    return OAuthCredentialSettings(token_url, "client_credentials", "labgate", "secret", **settings)


def test_a_token_endpoint_on_the_appliance_is_verified_like_the_appliance(tmp_path: Path) -> None:
    lab = upstream_with(tmp_path, "https://10.0.0.20", tls={"verify": False})
    assert token_endpoint_tls(lab, oauth_at("https://10.0.0.20/api/oauth/token")) is False
    verified = upstream_with(tmp_path, "https://10.0.0.20")
    assert isinstance(token_endpoint_tls(verified, oauth_at("https://10.0.0.20/api/oauth/token")), ssl.SSLContext)


def test_a_token_endpoint_elsewhere_is_verified_by_its_own_settings(tmp_path: Path) -> None:
    """An SSO service (GreenLake's) is not lab gear: the appliance's verify: false does not reach it."""
    lab = upstream_with(tmp_path, "https://10.0.0.20", tls={"verify": False})
    assert token_endpoint_tls(lab, oauth_at("https://sso.lab.example/as/token.oauth2")) is True
    assert token_endpoint_tls(lab, oauth_at("https://sso.lab.example/as/token.oauth2", tls_verify=False)) is False
