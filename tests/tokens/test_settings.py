"""The observe and introspect token_source sections: what loads, and every mistake with its line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy.config import load_config
from proxy.tokens.introspect import IntrospectSourceSettings
from proxy.tokens.observe import ObserveSourceSettings
from tests.conftest import write_config
from tests.test_config import problems_for

OBSERVE = {
    "type": "observe",
    "token_endpoint": "/api/oauth/token",
    "revoke_endpoint": "GET /api/oauth/revoke",
    "max_lifetime": "24h",
    "types": [{"token_type": "reader", "match": {"grant_type": "emergency", "username": "svtcli"}}],
}
INTROSPECT = {
    "type": "introspect",
    "endpoint": "https://idp.example/oauth2/introspect",
    "client_id": "labgate",
    "client_secret_file": "introspect.secret",
    "types": [{"token_type": "admin", "match": {"scope": {"contains": "admin"}}}],
    "cache": {"size": 100, "max_seconds": 30, "negative_seconds": 2},
}


def with_source(source: dict[str, Any]) -> Any:
    return lambda d: d["upstreams"][0].update(token_source=source)


def test_an_observe_source_loads(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path, "http://127.0.0.1:9", upstream={"token_source": OBSERVE}))
    settings = config.upstreams[0].token_source
    assert isinstance(settings, ObserveSourceSettings)
    assert settings.token_endpoint == "/api/oauth/token"
    assert settings.revoke_endpoint is not None and settings.revoke_endpoint.text == "GET /api/oauth/revoke"
    assert settings.max_lifetime == 86400.0


def test_an_introspect_source_loads_with_its_secret_from_a_file(tmp_path: Path) -> None:
    (tmp_path / "introspect.secret").write_text("s3cret\n")
    config = load_config(write_config(tmp_path, "http://127.0.0.1:9", upstream={"token_source": INTROSPECT}))
    settings = config.upstreams[0].token_source
    assert isinstance(settings, IntrospectSourceSettings)
    assert (settings.client_secret, settings.cache_size, settings.cache_negative_seconds) == ("s3cret", 100, 2.0)


BAD_SOURCES = [
    ("observe_without_endpoint", {k: v for k, v in OBSERVE.items() if k != "token_endpoint"}, "missing required key 'token_endpoint'"),
    ("observe_endpoint_not_a_path", {**OBSERVE, "token_endpoint": "api/oauth/token"}, "path must start with '/'"),
    ("observe_endpoint_with_param", {**OBSERVE, "token_endpoint": "/api/{x}/token"}, "params"),
    ("observe_revoke_without_method", {**OBSERVE, "revoke_endpoint": "/api/oauth/revoke"}, "must be 'METHOD /path'"),
    ("observe_revoke_with_param", {**OBSERVE, "revoke_endpoint": "GET /api/{x}"}, "without {params}"),
    ("observe_matches_a_password", {**OBSERVE, "types": [{"token_type": "reader", "match": {"password": "x"}}]}, "not 'password'"),
    ("observe_unknown_type", {**OBSERVE, "types": [{"token_type": "ghost", "match": {"grant_type": "x"}}]}, "unknown token type 'ghost'"),
    ("observe_unknown_key", {**OBSERVE, "jwks_url": "https://x"}, "unknown key 'jwks_url' in an observe token_source"),
    ("observe_bad_lifetime", {**OBSERVE, "max_lifetime": "forever"}, "bad duration 'forever'"),
    ("introspect_plain_http", {**INTROSPECT, "endpoint": "http://idp.example/introspect"}, "plain http only on loopback"),
    ("introspect_two_secrets", {**INTROSPECT, "client_secret_env": "X"}, "exactly one of client_secret_file, client_secret_env"),
    ("introspect_no_secret", {k: v for k, v in INTROSPECT.items() if k != "client_secret_file"}, "exactly one of client_secret_file"),
    ("introspect_missing_secret_file", {**INTROSPECT, "client_secret_file": "nowhere.secret"}, "cannot read 'nowhere.secret'"),
    ("introspect_unset_env", {**{k: v for k, v in INTROSPECT.items() if k != "client_secret_file"}, "client_secret_env": "LABGATE_TEST_UNSET"}, "LABGATE_TEST_UNSET"),
    ("introspect_bad_auth", {**INTROSPECT, "client_auth": "jwt"}, "'client_auth' must be one of basic, post"),
    ("introspect_bad_cache_key", {**INTROSPECT, "cache": {"ttl": 3}}, "unknown key 'ttl' in token_source.cache"),
    ("introspect_no_types", {**INTROSPECT, "types": []}, "at least one token type"),
]


@pytest.mark.parametrize("source, expected", [c[1:] for c in BAD_SOURCES], ids=[c[0] for c in BAD_SOURCES])
def test_a_bad_source_is_refused_with_file_and_line(tmp_path: Path, source: dict[str, Any], expected: str) -> None:
    (tmp_path / "introspect.secret").write_text("s3cret")
    found = problems_for(tmp_path, with_source(source))
    assert any(expected in p for p in found), found
    assert all(".yaml:" in p for p in found)
    assert not any("s3cret" in p for p in found)
