"""Which token type each grant yields (the upstream's grants), and the lifetimes a type gives its tokens."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy.config import load_config
from proxy.issuer.grants import DEFAULT_ACCESS_TOKEN_LIFETIME, token_terms
from proxy.policy.load import load_compiled_pack
from proxy.policy.model import Lifetimes
from proxy.tokens.issuer_source import IssuerSourceSettings
from tests.conftest import write_config
from tests.issuer.issuing import issuer_settings
from tests.issuer.shipped import POLICIES
from tests.test_config import problems_for

ISSUER = {"url": "https://labgate.lab.example"}


def with_source(source: dict[str, Any]) -> Any:
    def mutate(document: dict[str, Any]) -> None:
        document["issuer"] = ISSUER
        document["upstreams"][0]["token_source"] = {"type": "issuer", **source}

    return mutate


def test_grants_map_to_the_packs_types(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, "http://127.0.0.1:9", issuer=ISSUER,
        upstream={"token_source": {"type": "issuer", "grants": {"password": "admin", "client_credentials": "reader"}}},
    )
    source = load_config(path).upstreams[0].token_source
    assert isinstance(source, IssuerSourceSettings)
    assert (source.token_type_for("password"), source.token_type_for("client_credentials")) == ("admin", "reader")
    assert source.token_type_for("emergency") is None and source.token_type_for("refresh_token") is None


def test_without_grants_the_token_endpoint_serves_no_grant(tmp_path: Path) -> None:
    source = load_config(write_config(tmp_path, "http://127.0.0.1:9", issuer=ISSUER, upstream={"token_source": {"type": "issuer"}})).upstreams[0].token_source
    assert isinstance(source, IssuerSourceSettings) and source.grants == ()


BAD = [
    ("unknown_type", {"grants": {"password": "root"}}, "unknown token type 'root' in pack 'demo'"),
    ("type_not_accepted", {"token_types": ["reader"], "grants": {"password": "admin"}}, "not among this upstream's token_types"),
    ("unknown_grant", {"grants": {"implicit": "reader"}}, "unknown grant 'implicit' in grants"),
    ("refresh_mapped", {"grants": {"refresh_token": "reader"}}, "refresh_token keeps its chain's type"),
    ("not_a_mapping", {"grants": ["password"]}, "'grants' must be a mapping"),
    ("empty_type", {"grants": {"password": ""}}, "must be a non-empty string"),
]


@pytest.mark.parametrize("source, expected", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_grants_are_refused_with_their_line(tmp_path: Path, source: dict[str, Any], expected: str) -> None:
    problems = problems_for(tmp_path, with_source(source))
    assert any(expected in p for p in problems), problems
    assert all(str(tmp_path / "labgate.yaml") + ":" in p for p in problems if expected in p)


ISSUER_SETTINGS = issuer_settings(access_token_max_lifetime=7200.0)


@pytest.mark.parametrize(
    "lifetimes, lifetime, refresh_until",
    [
        (Lifetimes(ttl=1800, refresh_until=90 * 86400), 1800, 90 * 86400),
        (Lifetimes(), DEFAULT_ACCESS_TOKEN_LIFETIME, None),
        (Lifetimes(idle=600, absolute=1200), 1200, None),
        (Lifetimes(ttl=600, absolute=1200), 600, None),
        (Lifetimes(ttl=14 * 86400), 7200, None),
    ],
    ids=["commvault-all", "no-ttl-default", "absolute-without-ttl", "ttl-within-absolute", "beyond-the-issuer-maximum"],
)
def test_token_terms(lifetimes: Lifetimes, lifetime: float, refresh_until: float | None) -> None:
    terms = token_terms(lifetimes, ISSUER_SETTINGS)
    assert (terms.lifetime, terms.refresh_until) == (lifetime, refresh_until)


def test_simplivity_tokens_live_24_hours_and_die_after_ten_idle_minutes() -> None:
    """SimpliVity: "Tokens expire either after ten minutes of inactivity or after 24 hours even with
    continuous activity." The token lives the 24 hours; the idle limit is checked at every request."""
    simplivity = load_compiled_pack(POLICIES / "simplivity.yaml")
    for token_type in ("emergency", "password"):
        lifetimes = simplivity.token_types[token_type].spec.lifetimes
        assert (lifetimes.idle, lifetimes.absolute) == (600, 86400)
        assert token_terms(lifetimes, issuer_settings(access_token_max_lifetime=365 * 86400.0)).lifetime == 86400
        assert token_terms(lifetimes, issuer_settings(access_token_max_lifetime=86400.0)).lifetime == 86400  # labgate's default bound
        assert token_terms(lifetimes, issuer_settings(access_token_max_lifetime=600.0)).lifetime == 600  # never past the issuer's
