"""The JWKS (RFC 7517) and the authorization server metadata (RFC 8414) labgate publishes."""

from __future__ import annotations

import json
import time

import jwt

from proxy.issuer.discovery import jwks_document, metadata_document
from proxy.issuer.ring import KeyRing, ensure_signing_key, rotate_signing_key
from proxy.store.memory import MemoryStore
from tests.issuer.issuing import PRIVATE_JWK_MEMBERS, issuer_settings


async def test_the_jwks_lists_the_active_and_still_valid_retired_keys_with_public_members_only() -> None:
    store = MemoryStore()
    es256, rs256 = issuer_settings(), issuer_settings(algorithm="RS256")
    now = time.time()
    first = await ensure_signing_key(store, es256, now=now - 10)
    second = await rotate_signing_key(store, rs256, now=now)
    assert first is not None
    document = jwks_document(await KeyRing(store, rs256).published())
    assert [(k["kid"], k["alg"], k["kty"], k["use"]) for k in document["keys"]] == [
        (first.kid, "ES256", "EC", "sig"),
        (second.kid, "RS256", "RSA", "sig"),
    ]
    text = json.dumps(document)
    for key in document["keys"]:
        assert not set(PRIVATE_JWK_MEMBERS) & set(key)
    assert "PRIVATE" not in text and "-----" not in text
    for key in document["keys"]:
        assert jwt.PyJWK(key).key is not None  # a relying party can load every one


async def test_a_key_past_its_grace_leaves_the_jwks() -> None:
    store = MemoryStore()
    settings = issuer_settings()
    now = time.time()
    old = await ensure_signing_key(store, settings, now=now - settings.retired_key_grace - 10)
    assert old is not None
    await rotate_signing_key(store, settings, now=now - settings.retired_key_grace - 1)
    document = jwks_document(await KeyRing(store, settings).published())
    assert old.kid not in [k["kid"] for k in document["keys"]] and len(document["keys"]) == 1


def test_the_metadata_names_the_issuer_its_token_endpoint_and_keys() -> None:
    document = metadata_document(issuer_settings(url="https://labgate.lab.example:8443"))
    assert document == {
        "issuer": "https://labgate.lab.example:8443",
        "token_endpoint": "https://labgate.lab.example:8443/oauth/token",
        "jwks_uri": "https://labgate.lab.example:8443/.well-known/jwks.json",
        "grant_types_supported": ["password", "client_credentials", "refresh_token", "emergency"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "response_types_supported": ["none"],
    }


def test_the_metadata_names_a_response_type_since_the_member_is_required_and_may_not_be_empty() -> None:
    """RFC 8414 section 2: "response_types_supported REQUIRED.  JSON array containing a list of the
    OAuth 2.0 "response_type" values that this authorization server supports."  Section 3.2: "Claims
    with zero elements MUST be omitted from the response."  Without an authorization endpoint labgate
    hands out nothing for any response_type: "none" (OAuth 2.0 Multiple Response Type Encoding
    Practices, section 4) is the registered value that says so."""
    document = metadata_document(issuer_settings())
    assert document["response_types_supported"] == ["none"]
    assert "authorization_endpoint" not in document
    assert all(value != [] for value in document.values())
