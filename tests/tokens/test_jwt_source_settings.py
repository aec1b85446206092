"""The jwt source: its settings validated, the JOSE header read strictly, oversized tokens refused first."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest

from proxy.reasons import Reason
from proxy.token_facts import TokenFacts, TokenRejection
from proxy.tokens.jwt_source import JwtSourceSettings
from proxy.verification_keys import load_static_key
from tests.tokens.jwt_tokens import RULES, b64, reason, settings, token_for, verify
from tests.tokens.keys import (
    HS_SECRET,
    claims,
    public_pem,
)

# -- configuration -------------------------------------------------------------------


HS256_KEY = load_static_key(kid="h1", algorithm="HS256", material=HS_SECRET)
RS256_KEY = load_static_key(kid="r1", algorithm="RS256", material=public_pem("rsa"))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"algorithms": ()}, "pin at least one"),
        ({"algorithms": ("HS256", "none")}, "not supported"),
        ({"algorithms": ("HS256", "NONE")}, "not supported"),
        ({"algorithms": ("HS256", "HS1")}, "not supported"),
        ({"static_keys": ()}, "'keys' or a 'jwks_url'"),
        ({"algorithms": ("RS256",), "jwks_url": "https://idp.example/jwks"}, "not in 'algorithms'"),
        ({"jwks_url": "http://idp.example/jwks", "algorithms": ("HS256", "RS256")}, "https"),
        ({"jwks_url": "ftp://idp.example/jwks", "algorithms": ("HS256", "RS256")}, "https"),
        ({"jwks_url": "https:///jwks", "algorithms": ("HS256", "RS256")}, "needs a host"),
        ({"jwks_url": "https://idp.example/jwks"}, "public-key algorithm"),
        ({"type_rules": ()}, "at least one token type"),
        ({"cache_size": 0}, "cache size"),
    ],
    ids=[
        "no_algorithms", "alg_none", "alg_NONE", "unknown_alg", "no_keys_at_all", "key_alg_not_pinned",
        "jwks_over_http", "jwks_over_ftp", "jwks_without_host", "jwks_with_only_hmac", "no_type_rules", "cache_size_zero",
    ],
)
def test_settings_are_validated(overrides: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"algorithms": ("HS256",), "static_keys": (HS256_KEY,), "type_rules": RULES, **overrides}
    with pytest.raises(ValueError, match=message):
        JwtSourceSettings(**values)


@pytest.mark.parametrize(
    "url",
    ["https://idp.example/jwks", "http://127.0.0.1:8080/jwks", "http://[::1]/jwks", "http://localhost/jwks"],
    ids=["https", "loopback_v4", "loopback_v6", "localhost"],
)
def test_jwks_urls_that_are_accepted(url: str) -> None:
    built = JwtSourceSettings(algorithms=("RS256",), jwks_url=url, type_rules=RULES)
    assert built.jwks_url == url and built.static_keys == ()


def test_settings_defaults_are_those_the_config_documents() -> None:
    built = JwtSourceSettings(algorithms=("RS256",), static_keys=(RS256_KEY,), type_rules=RULES)
    assert (built.subject_claim, built.cache_size, built.cache_max_seconds) == ("sub", 10000, 300.0)
    assert built.path_prefixes_claim is None and built.client_ips_claim is None and built.expected_typ is None


# -- the JOSE header read as strictly as the claims; size refused before any work ------------


def raw_header_token(header_json: str, payload: dict[str, Any] | None = None) -> str:
    """An HS256-signed token whose JOSE header is exactly ``header_json`` (duplicates and all)."""
    signing_input = f"{b64(header_json.encode())}.{b64(json.dumps(payload or claims()).encode())}"
    return f"{signing_input}.{b64(hmac.new(HS_SECRET, signing_input.encode(), hashlib.sha256).digest())}"


async def test_a_header_built_by_hand_verifies_when_its_names_are_unique() -> None:
    assert isinstance(await verify(raw_header_token('{"alg":"HS256","kid":"h1"}')), TokenFacts)


@pytest.mark.parametrize(
    "header_json",
    [
        '{"alg":"HS256","kid":"h1","alg":"HS256"}',  # the same value twice: still two readings to trust
        '{"alg":"none","kid":"h1","alg":"HS256"}',  # PyJWT keeps the last; another parser the first
        '{"alg":"HS256","kid":"h9","kid":"h1"}',
        '{"alg":"HS256","kid":"h1","typ":"JWT","typ":"at+jwt"}',
        '{"alg":"HS256","kid":"h1","x":NaN}',
    ],
    ids=["alg_twice_same", "alg_twice_different", "kid_twice", "typ_twice", "nan_constant"],
)
async def test_duplicate_names_in_the_jose_header_are_malformed(header_json: str) -> None:
    """RFC 7515 section 4: header parameter names must be unique, or the token rejected."""
    result = await verify(raw_header_token(header_json))
    assert reason(result) is Reason.MALFORMED_TOKEN
    assert isinstance(result, TokenRejection) and "header" in result.detail


def big_token(size: int, alg: str = "HS256") -> str:
    """A correctly signed token of at least ``size`` characters (a padding claim)."""
    token = token_for(alg, claims(padding="x" * size))
    assert len(token) > size
    return token


async def test_a_token_over_max_token_bytes_is_refused_before_any_key_lookup() -> None:
    """The keys live behind an unreachable JWKS URL: a small token is refused for want of keys,
    an oversized one as too large, with no fetch attempted."""
    fetches: list[str] = []
    source_settings = settings(("RS256",), static_keys=(), jwks_url="https://127.0.0.1:9/jwks")
    small = await verify(token_for("RS256"), source_settings, on_fetch=fetches.append)
    assert reason(small) is Reason.KEYS_UNAVAILABLE and fetches == ["error"]
    fetches.clear()
    large = await verify(big_token(5000, "RS256"), source_settings, on_fetch=fetches.append)
    assert reason(large) is Reason.TOKEN_TOO_LARGE
    assert fetches == []


async def test_max_token_bytes_is_per_source_and_inclusive() -> None:
    token = big_token(4400)  # about 6 KB
    assert 4096 < len(token) < 8192
    assert reason(await verify(token)) is Reason.TOKEN_TOO_LARGE  # the default, 4096
    assert isinstance(await verify(token, settings(max_token_bytes=8192)), TokenFacts)
    assert isinstance(await verify(token, settings(max_token_bytes=len(token))), TokenFacts)
    assert reason(await verify(token, settings(max_token_bytes=len(token) - 1))) is Reason.TOKEN_TOO_LARGE
    assert JwtSourceSettings(algorithms=("HS256",), static_keys=settings().static_keys, type_rules=RULES).max_token_bytes == 4096


async def test_max_token_bytes_is_read_from_the_config(tmp_path: Path) -> None:
    from proxy.config import load_config
    from tests.conftest import write_config

    source = jwt_config_source(max_token_bytes=8192)
    config = load_config(write_config(tmp_path, "http://127.0.0.1:9", upstream={"token_source": source}))
    assert config.upstreams[0].token_source.max_token_bytes == 8192


@pytest.mark.parametrize("value", [255, 0, "big"])
def test_labgate_check_refuses_a_max_token_bytes_below_256_at_its_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], value: object
) -> None:
    from proxy.cli import main
    from tests.conftest import write_config

    path = write_config(tmp_path, "http://127.0.0.1:9", upstream={"token_source": jwt_config_source(max_token_bytes=value)})
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if "max_token_bytes" in text)
    assert main(["check", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:{line}:" in err and "max_token_bytes" in err


def jwt_config_source(**extra: Any) -> dict[str, Any]:
    """The jwt token_source of tests.conftest.write_config, with ``extra`` keys."""
    return {
        "type": "jwt",
        "algorithms": ["HS256"],
        "keys": [{"kid": "k1", "algorithm": "HS256", "secret_file": "hs256.secret"}],
        "types": [{"token_type": "reader", "match": {"role": "reader"}}],
        **extra,
    }
