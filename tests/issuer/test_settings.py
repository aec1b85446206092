"""The config's issuer section and the issuer token_source: what loads, and every mistake with its line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy.config import load_config
from proxy.tokens.issuer_source import IssuerSourceSettings
from proxy.yamlsource import ConfigError
from tests.conftest import write_config
from tests.test_config import problems_for

ISSUER = {"url": "https://labgate.lab.example"}
SOURCE = {"type": "issuer"}


def issuer_config(tmp_path: Path, issuer: dict[str, Any] | None = None, source: dict[str, Any] | None = None) -> Path:
    return write_config(
        tmp_path, "http://127.0.0.1:9", upstream={"token_source": source or SOURCE}, issuer=issuer or ISSUER
    )


def test_defaults(tmp_path: Path) -> None:
    config = load_config(issuer_config(tmp_path))
    assert config.issuer is not None
    assert (config.issuer.url, config.issuer.algorithm) == ("https://labgate.lab.example", "ES256")
    assert (config.issuer.access_token_max_lifetime, config.issuer.key_refresh_interval, config.issuer.leeway) == (86400, 5, 5)
    assert config.issuer.key_passphrase is None
    source = config.upstreams[0].token_source
    assert isinstance(source, IssuerSourceSettings)
    assert source.issuer == config.issuer
    assert source.audience == ("demo",)  # the upstream's name
    assert set(source.token_types) == {"reader", "admin", "office", "session"}  # every type of its pack


def test_everything_set(tmp_path: Path) -> None:
    (tmp_path / "issuer.passphrase").write_text("a long and random passphrase\n")
    issuer = {
        "url": "https://labgate.lab.example:8443/", "algorithm": "RS256", "access_token_max_lifetime": "30d",
        "key_refresh_interval": 2, "leeway": 0, "key_passphrase_file": "issuer.passphrase",
    }
    source = {"type": "issuer", "audience": ["svt", "svt-b"], "token_types": ["reader"], "cache": {"size": 50}}
    config = load_config(issuer_config(tmp_path, issuer, source))
    assert config.issuer is not None
    assert config.issuer.url == "https://labgate.lab.example:8443"  # one spelling: iss is compared as a string
    assert (config.issuer.algorithm, config.issuer.access_token_max_lifetime) == ("RS256", 30 * 86400)
    assert (config.issuer.key_refresh_interval, config.issuer.leeway) == (2, 0)
    assert config.issuer.key_passphrase == b"a long and random passphrase"
    assert "random passphrase" not in repr(config.issuer)
    settings = config.upstreams[0].token_source
    assert isinstance(settings, IssuerSourceSettings)
    assert (settings.audience, settings.token_types, settings.cache_size) == (("svt", "svt-b"), ("reader",), 50)


def test_the_passphrase_can_come_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABGATE_KEY_PASSPHRASE", "sixteen chars at least")
    config = load_config(issuer_config(tmp_path, {**ISSUER, "key_passphrase_env": "LABGATE_KEY_PASSPHRASE"}))
    assert config.issuer is not None and config.issuer.key_passphrase == b"sixteen chars at least"


def test_without_an_issuer_section_there_is_no_issuer(tmp_path: Path) -> None:
    assert load_config(write_config(tmp_path, "http://127.0.0.1:9")).issuer is None


def with_issuer(issuer: dict[str, Any], source: dict[str, Any] | None = None) -> Any:
    def mutate(document: dict[str, Any]) -> None:
        document["issuer"] = issuer
        document["upstreams"][0]["token_source"] = source or SOURCE

    return mutate


BAD = [
    ("no_url", {}, None, "missing required key 'url'"),
    ("plain_http", {"url": "http://labgate.lab.example"}, None, "must be https:// (plain http only on loopback)"),
    ("not_a_url", {"url": "labgate"}, None, "must be https:// with a host"),
    ("with_a_path", {"url": "https://labgate.lab.example/oauth"}, None, "must be an origin only"),
    ("with_a_query", {"url": "https://labgate.lab.example/?x=1"}, None, "must be an origin only"),
    ("hmac_algorithm", {**ISSUER, "algorithm": "HS256"}, None, "'algorithm' must be one of ES256, RS256"),
    ("unknown_key", {**ISSUER, "keys": []}, None, "unknown key 'keys' in issuer"),
    ("lifetime_too_long", {**ISSUER, "access_token_max_lifetime": "400d"}, None, "at most 366d"),
    ("lifetime_not_a_duration", {**ISSUER, "access_token_max_lifetime": "soon"}, None, "bad duration"),
    ("refresh_too_often", {**ISSUER, "key_refresh_interval": 0.5}, None, "at least 1.0"),
    ("refresh_too_rarely", {**ISSUER, "key_refresh_interval": 3600}, None, "at most 300"),
    ("negative_leeway", {**ISSUER, "leeway": -1}, None, "at least 0.0"),
    ("passphrase_twice", {**ISSUER, "key_passphrase_file": "a", "key_passphrase_env": "B"}, None, "give at most one of key_passphrase_file, key_passphrase_env"),
    ("passphrase_file_missing", {**ISSUER, "key_passphrase_file": "missing.passphrase"}, None, "cannot read 'missing.passphrase'"),
    ("passphrase_env_unset", {**ISSUER, "key_passphrase_env": "LABGATE_NOT_SET_ANYWHERE"}, None, "is not set or empty"),
    ("source_unknown_key", ISSUER, {"type": "issuer", "issuer": "x"}, "unknown key 'issuer' in an issuer token_source"),
    ("source_unknown_type", ISSUER, {"type": "issuer", "token_types": ["root"]}, "unknown token type 'root' in pack 'demo'"),
    ("source_empty_types", ISSUER, {"type": "issuer", "token_types": []}, "list the pack's types"),
    ("source_empty_audience", ISSUER, {"type": "issuer", "audience": []}, "give the upstream's audience"),
    ("source_cache_max_seconds", ISSUER, {"type": "issuer", "cache": {"max_seconds": 5}}, "unknown key 'max_seconds'"),
]


@pytest.mark.parametrize("issuer, source, expected", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_issuer_settings_are_refused_with_their_line(
    tmp_path: Path, issuer: dict[str, Any], source: dict[str, Any] | None, expected: str
) -> None:
    problems = problems_for(tmp_path, with_issuer(issuer, source))
    assert any(expected in p for p in problems), problems
    assert all(str(tmp_path / "labgate.yaml") + ":" in p for p in problems if expected in p)


def test_a_short_passphrase_is_refused(tmp_path: Path) -> None:
    (tmp_path / "short.passphrase").write_text("hunter2\n")
    problems = problems_for(tmp_path, with_issuer({**ISSUER, "key_passphrase_file": "short.passphrase"}))
    assert any("at least 16 characters" in p for p in problems)
    assert not any("hunter2" in p for p in problems)


def test_an_issuer_source_needs_the_issuer_section(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, lambda d: d["upstreams"][0].update(token_source=SOURCE))
    assert any("it needs a valid top-level 'issuer' section" in p for p in problems)


def test_the_issuer_paths_cannot_be_hidden_or_taken(tmp_path: Path) -> None:
    def hide(document: dict[str, Any]) -> None:
        with_issuer(ISSUER)(document)
        document["upstreams"][0]["path_prefix"] = "/oauth"
        document["endpoints"] = {"metrics": "/.well-known/jwks.json"}

    problems = problems_for(tmp_path, hide)
    assert any("path_prefix '/oauth' would hide the issuer's /oauth/token" in p for p in problems)
    assert any("endpoint /.well-known/jwks.json is one of the issuer's own paths" in p for p in problems)


def test_the_line_named_is_the_bad_keys(tmp_path: Path) -> None:
    path = issuer_config(tmp_path, {"url": "https://labgate.lab.example", "algorithm": "PS256"})
    lines = path.read_text().splitlines()
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    line = next(i for i, text in enumerate(lines, 1) if "algorithm: PS256" in text)
    problems = [str(p) for p in caught.value.problems]
    assert f"{path}:{line}: 'algorithm' must be one of ES256, RS256, not 'PS256'" in problems
