"""Development tokens: signed only for a jwt source with a shared secret, always of the type asked for, marked dev."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jwt
import pytest

from proxy.cli import main
from proxy.config import load_config
from proxy.tokens.dev_token import (
    DevTokenRefused,
    DevTokenRequest,
    mint_dev_token,
    parse_claim,
)
from proxy.tokens.jwt_source import JwtSource, JwtSourceSettings
from proxy.tokens.matchers import TypeRule, compile_conditions
from proxy.verification_keys import load_static_key
from tests.conftest import AUDIENCE, ISSUER, SECRET, write_config

EXAMPLES = Path(__file__).parent.parent.parent / "deploy" / "examples"
KEY = load_static_key(kid="k1", algorithm="HS256", material=SECRET.encode())


def settings(*rules: tuple[str, dict[str, Any]], **changes: Any) -> JwtSourceSettings:
    return JwtSourceSettings(
        algorithms=("HS256",),
        static_keys=(KEY,),
        issuer=ISSUER,
        audience=(AUDIENCE,),
        type_rules=tuple(TypeRule(name, compile_conditions(match)) for name, match in rules),
        **changes,
    )


def claims_of(token: str) -> dict[str, Any]:
    return jwt.decode(token, SECRET, algorithms=["HS256"], audience=AUDIENCE, issuer=ISSUER)  # type: ignore[no-any-return]


async def test_a_dev_token_verifies_as_the_type_asked_for_and_says_dev() -> None:
    source = settings(("admin", {"role": "admin"}), ("reader", {"role": "reader"}))
    token = await mint_dev_token(source, "demo", DevTokenRequest("reader", subject="alice", lifetime=600))
    claims = claims_of(token)
    assert claims["dev"] is True and claims["role"] == "reader" and claims["sub"] == "alice"
    assert claims["exp"] - claims["iat"] == 600
    facts = await JwtSource(source).verify(token)
    assert getattr(facts, "token_type", None) == "reader"


async def test_every_kind_of_condition_is_met() -> None:
    source = settings(
        ("ops", {"realm_access.roles": {"contains": "ops"}, "tier": {"in": ["gold", "silver"]},
                 "tenant": {"present": True}, "banned": {"present": False}, "level": 3}),
        required_claims=("team",),
    )
    claims = claims_of(await mint_dev_token(source, "demo", DevTokenRequest("ops")))
    assert claims["realm_access"] == {"roles": ["ops"]} and claims["tier"] == "gold" and claims["level"] == 3
    assert "tenant" in claims and "banned" not in claims and "team" in claims


async def test_a_type_an_earlier_rule_would_take_is_never_printed() -> None:
    source = settings(("anyone", {}), ("admin", {"role": "admin"}))
    with pytest.raises(DevTokenRefused, match="would take the token as 'anyone', not 'admin'"):
        await mint_dev_token(source, "demo", DevTokenRequest("admin"))


async def test_an_unknown_type_names_the_types_the_source_maps() -> None:
    with pytest.raises(DevTokenRefused, match=r"maps no claims to token type 'root' \(it maps: reader\)"):
        await mint_dev_token(settings(("reader", {"role": "reader"})), "demo", DevTokenRequest("root"))


async def test_extra_claims_narrow_the_token_and_cannot_unmark_it() -> None:
    source = settings(("reader", {"role": "reader"}), path_prefixes_claim="prefixes")
    request = DevTokenRequest("reader", extra_claims=dict([parse_claim('prefixes=["/api/hosts"]')]))
    assert claims_of(await mint_dev_token(source, "demo", request))["prefixes"] == ["/api/hosts"]
    with pytest.raises(DevTokenRefused, match="set by labgate"):
        parse_claim("dev=false")
    assert parse_claim("scope=read write") == ("scope", "read write")


@pytest.mark.parametrize(
    ("config", "upstream", "expected"),
    [
        ("lab.yaml", "simplivity", "the appliance's own opaque tokens"),
        ("lab.yaml", "vcf", "labgate token issue"),
        ("lab.yaml", "greenlake", "public keys only (RS256)"),
    ],
)
async def test_sources_labgate_cannot_sign_for_say_where_tokens_come_from(config: str, upstream: str, expected: str) -> None:
    loaded = load_config(EXAMPLES / config)
    source = next(u for u in loaded.upstreams if u.name == upstream).token_source
    with pytest.raises(DevTokenRefused, match=re.escape(expected)):
        await mint_dev_token(source, upstream, DevTokenRequest("whatever"))


async def test_a_lifetime_beyond_a_day_is_refused() -> None:
    with pytest.raises(DevTokenRefused, match="between 1 second and 24 hours"):
        await mint_dev_token(settings(("reader", {})), "demo", DevTokenRequest("reader", lifetime=2 * 86400))


def test_the_command_prints_only_the_token_and_warns_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_config(tmp_path, "http://127.0.0.1:9"))
    code = main(["token", "dev", "--config", config, "--upstream", "demo", "--token-type", "admin", "--lifetime", "5m"])
    out, err = capsys.readouterr()
    assert code == 0
    [token] = out.split()
    assert claims_of(token)["role"] == "admin"
    assert "development token (dev: true)" in err and "never for production" in err and token not in err
    assert main(["explain", "--config", config, "--upstream", "demo", "--token", token, "GET", "/api/hosts"]) in (0, 3)
    assert '"token_type": "admin"' in capsys.readouterr().out


def test_the_command_refuses_an_unknown_upstream_with_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_config(tmp_path, "http://127.0.0.1:9"))
    assert main(["token", "dev", "--config", config, "--upstream", "nope", "--token-type", "admin"]) == 2
    assert "no token made: unknown upstream 'nope' (known: demo)" in capsys.readouterr().err
