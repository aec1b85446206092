"""Reading a token request: parameters once each, and one way for the client to authenticate (RFC 6749 2.3.1)."""

from __future__ import annotations

import base64

import pytest

from proxy.gateway.token_service.token_request import (
    ClientAuthenticationFailed,
    read_token_endpoint_request,
)
from proxy.tokens.observe import BadTokenRequest

FORM = "application/x-www-form-urlencoded"


def basic(raw: str) -> str:
    return "Basic " + base64.b64encode(raw.encode()).decode()


def test_basic_credentials_are_form_urlencoded_before_they_are_joined() -> None:
    """A ':' or '%' in a secret survives: RFC 6749 section 2.3.1 encodes both parts first."""
    form = read_token_endpoint_request(b"grant_type=client_credentials", FORM, [basic("my%20app:se%3Acret%25")])
    assert (form.client.method, form.client.client_id, form.client.secret) == ("basic", "my app", "se:cret%")
    assert form.client.confidential and "se:cret" not in repr(form)


def test_body_credentials_and_public_clients() -> None:
    post = read_token_endpoint_request(b"grant_type=client_credentials&client_id=a&client_secret=s", FORM, [])
    assert (post.client.method, post.client.client_id, post.client.secret) == ("post", "a", "s")
    assert "client_secret" not in post.fields and "client_id" not in post.fields
    public = read_token_endpoint_request(b"grant_type=password&client_id=cli", FORM, [])
    assert (public.client.method, public.client.client_id, public.client.confidential) == ("none", "cli", False)
    empty_secret = read_token_endpoint_request(b"grant_type=emergency", FORM, [basic("simplivity:")])
    assert (empty_secret.client.client_id, empty_secret.client.confidential) == ("simplivity", False)
    nobody = read_token_endpoint_request(b"grant_type=password", FORM, [])
    assert nobody.client.client_id is None


@pytest.mark.parametrize(
    "body, authorizations",
    [
        (b"grant_type=client_credentials&client_secret=s", [basic("a:s")]),
        (b"grant_type=client_credentials&client_id=b", [basic("a:s")]),
        (b"grant_type=client_credentials", [basic("a:s"), basic("a:s")]),
        (b"grant_type=client_credentials&client_secret=s", []),
        (b"grant_type=client_credentials", ["Bearer abc"]),
        (b"grant_type=a&grant_type=a", []),
        (b"client_id=a", []),
    ],
    ids=["basic-and-body-secret", "two-client-ids", "two-headers", "secret-without-id", "bearer", "duplicate", "no-grant"],
)
def test_ambiguous_requests_are_invalid_requests(body: bytes, authorizations: list[str]) -> None:
    with pytest.raises(BadTokenRequest):
        read_token_endpoint_request(body, FORM, authorizations)


@pytest.mark.parametrize("header", ["Basic %%%", basic("no-colon"), basic(":secret"), "Basic " + base64.b64encode(b"\xff:x").decode(), basic("a%ff:x")],
                         ids=["not-base64", "no-colon", "no-id", "not-utf8", "bad-escape"])
def test_unreadable_basic_credentials_are_invalid_client(header: str) -> None:
    with pytest.raises(ClientAuthenticationFailed) as caught:
        read_token_endpoint_request(b"grant_type=client_credentials", FORM, [header])
    assert caught.value.basic
