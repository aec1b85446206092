"""What a labgate access token says (RFC 9068), and what minting refuses to sign."""

from __future__ import annotations

import math
import time
from typing import Any

import jwt
import pytest

from proxy.issuer.access_tokens import MintedToken, mint_access_token
from proxy.issuer.ring import KeyRing, SigningKey
from proxy.store.memory import MemoryStore
from proxy.token_facts import token_fingerprint
from tests.issuer.issuing import ISSUER_URL, grant, issuer_settings

SETTINGS = issuer_settings(access_token_max_lifetime=600.0)


@pytest.fixture
async def key() -> SigningKey:
    return await KeyRing(MemoryStore(), SETTINGS).signing_key()


def decoded(minted: MintedToken, key: SigningKey) -> tuple[dict[str, Any], dict[str, Any]]:
    claims = jwt.decode(minted.token, key.private_key.public_key(), algorithms=["ES256"], audience="demo")
    return jwt.get_unverified_header(minted.token), claims


async def test_a_token_carries_the_rfc9068_claims_and_labgates_own(key: SigningKey) -> None:
    now = 1_700_000_000.7
    minted = mint_access_token(key, SETTINGS, grant(scope=("read", "backup")), now=time.time())
    header, claims = decoded(minted, key)
    assert header == {"alg": "ES256", "kid": key.kid, "typ": "at+jwt"}
    assert set(claims) == {"iss", "sub", "aud", "iat", "exp", "jti", "client_id", "token_type", "scope"}
    assert (claims["iss"], claims["sub"], claims["aud"], claims["client_id"]) == (ISSUER_URL, "alice", "demo", "ops-cli")
    assert (claims["token_type"], claims["scope"]) == ("reader", "read backup")
    assert claims["exp"] - claims["iat"] == 300
    assert (minted.jti, minted.kid, minted.issued_at, minted.expires_at) == (claims["jti"], key.kid, claims["iat"], claims["exp"])
    assert minted.fingerprint == token_fingerprint(minted.token)
    later = mint_access_token(key, SETTINGS, grant(lifetime=599.9), now=now)
    assert (later.issued_at, later.expires_at) == (math.floor(now), math.floor(now) + 599)  # whole seconds, never longer


async def test_narrowing_claims_are_written_only_when_given(key: SigningKey) -> None:
    plain = mint_access_token(key, SETTINGS, grant(), now=time.time())
    assert not {"path_prefixes", "client_ips", "scope"} & set(decoded(plain, key)[1])
    narrowed = mint_access_token(
        key, SETTINGS, grant(path_prefixes=("/V4/Client",), client_ips=("10.0.0.0/8", "192.0.2.1–192.0.2.9")), now=time.time()
    )
    claims = decoded(narrowed, key)[1]
    assert (claims["path_prefixes"], claims["client_ips"]) == (["/V4/Client"], ["10.0.0.0/8", "192.0.2.1–192.0.2.9"])


async def test_a_token_minted_in_a_refresh_chain_names_it(key: SigningKey) -> None:
    chained = mint_access_token(key, SETTINGS, grant(chain="c-123"), now=time.time())
    assert decoded(chained, key)[1]["chain"] == "c-123"
    assert "chain" not in decoded(mint_access_token(key, SETTINGS, grant(), now=time.time()), key)[1]


async def test_every_token_has_its_own_jti(key: SigningKey) -> None:
    assert len({mint_access_token(key, SETTINGS, grant(), now=time.time()).jti for _ in range(50)}) == 50


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"lifetime": 601}, "access_token_max_lifetime"),
        ({"lifetime": 0.5}, "between 1 s"),
        ({"subject": ""}, "needs a subject"),
        ({"client_id": ""}, "needs a client_id"),
        ({"token_type": ""}, "needs a token_type"),
        ({"audience": ""}, "needs a audience"),
        ({"scope": ("read write",)}, "single non-empty words"),
        ({"path_prefixes": ("/api/../admin",)}, "cannot match safely"),
        ({"path_prefixes": ()}, "would allow nothing"),
        ({"client_ips": ("10.0.0.300",)}, "invalid address"),
        ({"client_ips": ()}, "would allow nothing"),
        ({"chain": ""}, "non-empty id"),
    ],
    ids=[
        "longer_than_the_maximum", "shorter_than_a_second", "no_subject", "no_client", "no_type", "no_audience",
        "scope_with_a_space", "prefix_with_dot_segments", "empty_prefix_list", "bad_address", "empty_address_list",
        "empty_chain",
    ],
)
async def test_minting_refuses_what_the_issuer_source_would_refuse(key: SigningKey, overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        mint_access_token(key, SETTINGS, grant(**overrides), now=time.time())


async def test_the_token_never_shows_in_a_minted_tokens_repr(key: SigningKey) -> None:
    minted = mint_access_token(key, SETTINGS, grant(), now=time.time())
    assert minted.token not in repr(minted) and minted.token.split(".")[2] not in repr(minted)
