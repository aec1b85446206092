"""An upstream's ``credential`` section: what loads, and each mistake as file:line: message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy.config import load_config
from proxy.credentials.settings import (
    BasicCredentialSettings,
    BearerCredentialSettings,
    OAuthCredentialSettings,
)
from proxy.yamlsource import ConfigError
from tests.conftest import write_config

UPSTREAM = "http://127.0.0.1:9"
OAUTH = {
    "type": "oauth",
    "token_url": "http://127.0.0.1:9/api/oauth/token",
    "grant": "password",
    "username": "svc-labgate",
    "password_file": "appliance.password",
}


def secrets_in(tmp_path: Path) -> None:
    (tmp_path / "appliance.token").write_text("static-appliance-token-1\n")
    (tmp_path / "appliance.password").write_text("pa55 w0rd:é\n")
    (tmp_path / "client.secret").write_text("client-secret-1\n")
    (tmp_path / "empty.secret").write_text("\n")


def load_with(tmp_path: Path, credential: Any, **upstream: Any) -> Any:
    secrets_in(tmp_path)
    config = load_config(write_config(tmp_path, upstream.pop("url", UPSTREAM), upstream={"credential": credential, **upstream}))
    return config.upstreams[0].credential


def problems_with(tmp_path: Path, credential: Any, **upstream: Any) -> list[str]:
    secrets_in(tmp_path)
    path = write_config(tmp_path, upstream.pop("url", UPSTREAM), upstream={"credential": credential, **upstream})
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(p) for p in caught.value.problems]


def test_no_credential_section_means_none(tmp_path: Path) -> None:
    assert load_config(write_config(tmp_path, UPSTREAM)).upstreams[0].credential is None


def test_a_bearer_token_is_read_from_its_file_without_the_newline(tmp_path: Path) -> None:
    credential = load_with(tmp_path, {"type": "bearer", "token_file": "appliance.token"})
    assert credential == BearerCredentialSettings("static-appliance-token-1")
    assert "static-appliance-token-1" not in repr(credential)


def test_a_basic_password_is_read_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APPLIANCE_PASSWORD", "from-the-env")
    credential = load_with(tmp_path, {"type": "basic", "username": "admin", "password_env": "APPLIANCE_PASSWORD"})
    assert credential == BasicCredentialSettings("admin", "from-the-env")
    assert "from-the-env" not in repr(credential)


def test_an_oauth_password_login_loads_with_its_defaults(tmp_path: Path) -> None:
    credential = load_with(tmp_path, OAUTH)
    assert isinstance(credential, OAuthCredentialSettings)
    assert (credential.grant, credential.username, credential.password) == ("password", "svc-labgate", "pa55 w0rd:é")
    assert (credential.client_id, credential.client_secret, credential.client_auth) == (None, None, "basic")
    assert (credential.renew_before, credential.renew_fraction, credential.idle_timeout, credential.timeout) == (None, None, None, 10.0)
    assert "pa55" not in repr(credential)


def test_an_oauth_client_credentials_login_with_every_key(tmp_path: Path) -> None:
    (tmp_path / "sso-ca.pem").write_text("not parsed at load\n")
    credential = load_with(
        tmp_path,
        {
            "type": "oauth",
            "token_url": "https://sso.lab.example/as/token.oauth2",
            "grant": "client_credentials",
            "client_id": "labgate",
            "client_secret_file": "client.secret",
            "client_auth": "post",
            "scope": "read write",
            "parameters": {"realm": "Local", "audience": "external_api"},
            "renew_before": "2m",
            "idle_timeout": "9m",
            "timeout": 3,
            "tls": {"ca_file": "sso-ca.pem"},
        },
    )
    assert isinstance(credential, OAuthCredentialSettings)
    assert (credential.client_id, credential.client_secret, credential.client_auth) == ("labgate", "client-secret-1", "post")
    assert credential.parameters == (("realm", "Local"), ("audience", "external_api"))
    assert (credential.scope, credential.renew_before, credential.idle_timeout, credential.timeout) == ("read write", 120.0, 540.0, 3.0)
    assert (credential.tls_verify, credential.ca_file) == (True, (tmp_path / "sso-ca.pem").resolve())
    assert "client-secret-1" not in repr(credential)


def test_a_public_client_id_without_a_secret_is_allowed_for_the_password_grant(tmp_path: Path) -> None:
    """SimpliVity's clients log in as client ``simplivity`` with an empty secret."""
    credential = load_with(tmp_path, {**OAUTH, "client_id": "simplivity"})
    assert (credential.client_id, credential.client_secret) == ("simplivity", None)


@pytest.mark.parametrize(
    "renew_before, seconds, fraction",
    [(30, 30.0, None), ("5m", 300.0, None), ("10%", None, 0.1), ("99%", None, 0.99)],
    ids=["seconds", "duration", "ten_percent", "ninety_nine_percent"],
)
def test_renew_before_is_seconds_or_a_share(tmp_path: Path, renew_before: Any, seconds: Any, fraction: Any) -> None:
    credential = load_with(tmp_path, {**OAUTH, "renew_before": renew_before})
    assert (credential.renew_before, credential.renew_fraction) == (seconds, fraction)


@pytest.mark.parametrize(
    "settings, lifetime, margin",
    [
        ({}, 7200.0, 60.0),  # default: a minute ...
        ({}, 300.0, 30.0),  # ... or a tenth of the lifetime when that is shorter
        ({"renew_before": 120.0}, 7200.0, 120.0),
        ({"renew_before": 120.0}, 60.0, 30.0),  # never before half the lifetime has passed
        ({"renew_fraction": 0.25}, 7200.0, 1800.0),
        ({"renew_fraction": 0.9}, 100.0, 50.0),
    ],
    ids=["default_minute", "default_tenth", "seconds", "seconds_capped_at_half", "share", "share_capped_at_half"],
)
def test_the_renew_margin(settings: dict[str, Any], lifetime: float, margin: float) -> None:
    oauth = OAuthCredentialSettings("https://appliance/token", "client_credentials", "id", "secret", **settings)
    assert oauth.renew_margin(lifetime) == margin


def oauth(**changes: Any) -> dict[str, Any]:
    merged = {**OAUTH, **changes}
    return {key: value for key, value in merged.items() if value is not None}


BAD_CREDENTIALS = [
    ("no_type", {"token_file": "appliance.token"}, "credential needs 'type'"),
    ("unknown_type", {"type": "kerberos"}, "'type' must be one of bearer, basic, oauth"),
    ("not_a_mapping", "Bearer abc", "'credential' must be a mapping"),
    ("inline_token", {"type": "bearer", "token": "abc"}, "unknown key 'token' in a bearer credential"),
    ("inline_password", {"type": "basic", "username": "u", "password": "p"}, "unknown key 'password' in a basic credential"),
    ("no_token", {"type": "bearer"}, "give exactly one of token_file, token_env"),
    ("two_token_sources", {"type": "bearer", "token_file": "appliance.token", "token_env": "X"}, "give exactly one of token_file, token_env"),
    ("missing_token_file", {"type": "bearer", "token_file": "nope.token"}, "cannot read 'nope.token'"),
    ("empty_token_file", {"type": "bearer", "token_file": "empty.secret"}, "'empty.secret' is empty"),
    ("unset_token_env", {"type": "bearer", "token_env": "LABGATE_TEST_UNSET_VARIABLE"}, "environment variable 'LABGATE_TEST_UNSET_VARIABLE' is not set"),
    ("token_with_space", {"type": "bearer", "token_file": "appliance.password"}, "printable ASCII without spaces"),
    ("basic_no_username", {"type": "basic", "password_file": "appliance.password"}, "missing required key 'username'"),
    ("basic_colon_username", {"type": "basic", "username": "a:b", "password_file": "appliance.password"}, "has no ':'"),
    ("basic_no_password", {"type": "basic", "username": "admin"}, "give exactly one of password_file, password_env"),
    ("inline_client_secret", oauth(client_id="c", client_secret="s"), "unknown key 'client_secret' in an oauth credential"),
    ("no_token_url", oauth(token_url=None), "missing required key 'token_url'"),
    ("plain_http_token_url", oauth(token_url="http://appliance.lab/token"), "plain http only on loopback"),
    ("token_url_not_a_url", oauth(token_url="appliance/token"), "token_url must be an https:// URL"),
    ("token_url_with_credentials", oauth(token_url="https://u:p@appliance/token"), "without credentials"),
    ("no_grant", oauth(grant=None), "needs 'grant' (one of password, client_credentials)"),
    ("unknown_grant", oauth(grant="authorization_code"), "'grant' must be one of password, client_credentials"),
    ("password_grant_without_password", oauth(password_file=None), "the password grant needs username and password"),
    ("password_grant_without_username", oauth(username=None), "the password grant needs username and password"),
    ("client_credentials_without_secret", oauth(grant="client_credentials", username=None, password_file=None, client_id="c"), "needs client_id and client_secret"),
    ("client_credentials_with_username", oauth(grant="client_credentials", client_id="c", client_secret_file="client.secret"), "leave out username"),
    ("secret_without_client_id", oauth(client_secret_file="client.secret"), "a client secret needs its client_id"),
    ("two_password_sources", oauth(password_env="X"), "give at most one of password_file, password_env"),
    ("bad_client_auth", oauth(client_auth="jwt"), "'client_auth' must be one of basic, post"),
    ("renew_zero_percent", oauth(renew_before="0%"), "a whole percentage from 1% to 99%"),
    ("renew_hundred_percent", oauth(renew_before="100%"), "a whole percentage from 1% to 99%"),
    ("renew_negative", oauth(renew_before=-5), "must be positive"),
    ("renew_words", oauth(renew_before="soon"), "renew_before: bad duration 'soon'"),
    ("idle_not_a_duration", oauth(idle_timeout="a while"), "bad duration 'a while'"),
    ("timeout_too_small", oauth(timeout=0), "'timeout' must be at least 0.1"),
    ("reserved_parameter", oauth(parameters={"password": "x"}), "parameter 'password' is set by labgate"),
    ("bad_parameter_name", oauth(parameters={"a b": "x"}), "parameter name 'a b' must be letters"),
    ("parameter_not_a_string", oauth(parameters={"realm": 5}), "parameter 'realm' must be a non-empty string"),
    ("tls_on_the_upstream_itself", oauth(tls={"verify": False}), "the upstream's tls applies"),
    ("tls_missing_ca", oauth(token_url="https://sso.lab/token", tls={"ca_file": "nope.pem"}), "ca_file: file 'nope.pem' does not exist"),
    ("tls_unknown_key", oauth(token_url="https://sso.lab/token", tls={"cert": "x"}), "unknown key 'cert' in credential.tls"),
]


@pytest.mark.parametrize("credential, expected", [c[1:] for c in BAD_CREDENTIALS], ids=[c[0] for c in BAD_CREDENTIALS])
def test_a_bad_credential_is_refused_with_file_and_line(tmp_path: Path, credential: Any, expected: str) -> None:
    problems = problems_with(tmp_path, credential)
    assert any(expected in p for p in problems), problems
    assert all(p.startswith(f"{tmp_path / 'labgate.yaml'}:") for p in problems)


def test_the_problem_names_the_line_of_the_bad_key(tmp_path: Path) -> None:
    [problem] = problems_with(tmp_path, {"type": "bearer", "token_file": "appliance.token", "scheme": "OpsToken"})
    lines = (tmp_path / "labgate.yaml").read_text().splitlines()
    line = int(problem.split(":")[1])
    assert lines[line - 1].strip().startswith("scheme:")


def test_an_observe_upstream_cannot_have_a_credential(tmp_path: Path) -> None:
    source = {"type": "observe", "token_endpoint": "/api/oauth/token", "types": [{"token_type": "reader"}]}
    problems = problems_with(tmp_path, {"type": "bearer", "token_file": "appliance.token"}, token_source=source)
    assert any("an observe upstream's clients send the appliance's own tokens" in p for p in problems), problems


def test_a_credential_never_goes_over_plain_http_beyond_loopback(tmp_path: Path) -> None:
    problems = problems_with(tmp_path, {"type": "bearer", "token_file": "appliance.token"}, url="http://10.0.0.20")
    assert any("the upstream url must be https://" in p for p in problems), problems


def test_no_problem_quotes_a_secret(tmp_path: Path) -> None:
    """Even a secret that fails a check is named by its file, never shown."""
    problems = problems_with(tmp_path, {"type": "bearer", "token_file": "appliance.password"})
    problems += problems_with(tmp_path, oauth(grant="client_credentials", client_id="c", client_secret_file="client.secret"))
    text = "\n".join(problems)
    assert problems and "pa55" not in text and "client-secret-1" not in text

