"""Service-account tokens: the scopes an upstream offers, what a create may say, lifetimes, the stored record."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from proxy.config import Config, load_config
from proxy.issuer.service_accounts import (
    ONE_TOUCH_PREFIXES,
    SCOPES,
    NewServiceToken,
    ServiceAccountProblem,
    ServiceAccountScopes,
    ServiceTokenRecord,
    parse_new_token,
    plan_token,
)
from proxy.tokens.issuer_source import IssuerSourceSettings
from proxy.yamlsource import ConfigError
from tests.issuer.issuing import issuer_settings
from tests.issuer.shipped import SCOPES as SCOPE_TYPES
from tests.issuer.shipped import commvault_upstream, shipped_config

DAY = 86400
NOW = 1_800_000_000
# Every form the Commvault document lists for an IP allowlist.
COMMVAULT_ALLOWLIST = [
    "10.0.0.1",
    "2001:0db8:85a3:0000:0000:8a2e:0370:7334",
    "2001:db8:85a3::8a2e:370:7334",
    "1.1.1.0/24",
    "2001:0db8:85a3::/64",
    "1.1.1.0 – 1.1.1.25",
    "2001:db8::1 - 2001:db8::ffff",
]


def load(tmp_path: Path, **source: Any) -> Config:
    return load_config(shipped_config(tmp_path, [commvault_upstream(**source)]))


def test_the_config_maps_every_scope_to_a_type(tmp_path: Path) -> None:
    settings = load(tmp_path).upstreams[0].token_source
    assert isinstance(settings, IssuerSourceSettings)
    assert settings.service_accounts == ServiceAccountScopes(tuple((s, SCOPE_TYPES[s]) for s in SCOPES))
    assert settings.emergency_clients is None


def test_an_upstream_may_offer_some_scopes_only(tmp_path: Path) -> None:
    settings = load(tmp_path, service_accounts={"Custom": "custom"}).upstreams[0].token_source
    assert isinstance(settings, IssuerSourceSettings) and settings.service_accounts is not None
    assert settings.service_accounts.scopes == ("Custom",)
    assert settings.service_accounts.token_type("All") is None


def problems(tmp_path: Path, **source: Any) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, **source)
    return [str(p) for p in caught.value.problems]


BAD = [
    ("unknown_scope", {"service_accounts": {"Everything": "all"}}, "unknown scope 'Everything' in service_accounts"),
    ("scope_in_another_case", {"service_accounts": {"all": "all"}}, "unknown scope 'all'"),
    ("unknown_type", {"service_accounts": {"All": "root"}}, "unknown token type 'root' in pack 'commvault'"),
    ("renewable_scim", {"service_accounts": {"Microsoft SCIM": "all"}}, "Microsoft SCIM tokens are not renewable"),
    ("renewable_one_touch", {"service_accounts": {"1-Touch recovery": "custom"}}, "1-Touch recovery tokens are not renewable"),
    ("type_not_accepted", {"service_accounts": {"All": "all"}, "token_types": ["custom"]}, "'all' is not among this upstream's token_types"),
    ("empty", {"service_accounts": {}}, "map at least one scope"),
    ("not_a_mapping", {"service_accounts": ["All"]}, "'service_accounts' must be a mapping"),
    ("type_not_text", {"service_accounts": {"All": 1}}, "'All' must be a non-empty string"),
]


@pytest.mark.parametrize("source, expected", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_service_account_settings_are_refused_at_their_line(tmp_path: Path, source: dict[str, Any], expected: str) -> None:
    found = problems(tmp_path, **source)
    assert any(expected in p for p in found), found
    config_file = str(tmp_path / "labgate.yaml")
    assert all(p.startswith(config_file + ":") and p[len(config_file) + 1].isdigit() for p in found)


def test_the_line_named_is_the_bad_scopes(tmp_path: Path) -> None:
    path = shipped_config(tmp_path, [commvault_upstream(service_accounts={"All": "all", "Microsoft SCIM": "custom"})])
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "Microsoft SCIM" in text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [str(p).split(": ", 1)[0] for p in caught.value.problems] == [f"{path}:{line}"]


# -- create requests ---------------------------------------------------------------------


def test_every_allowlist_form_of_the_commvault_document_is_taken() -> None:
    new = parse_new_token({"tokenName": "backup", "ipAllowlist": COMMVAULT_ALLOWLIST}, SCOPES)
    assert new.ip_allowlist == tuple(COMMVAULT_ALLOWLIST)
    assert (new.scope, new.api_endpoints) == ("All", None)  # scope All by default, as in Command Center


def test_entries_may_come_one_per_line_as_commvault_takes_them() -> None:
    body = {"tokenName": "plans", "scope": "Custom", "apiEndpoints": "/V2/Plan\r\n\n  /Client  \n",
            "ipAllowlist": "\n".join(COMMVAULT_ALLOWLIST)}
    new = parse_new_token(body, SCOPES)
    assert new.api_endpoints == ("/V2/Plan", "/Client")
    assert new.ip_allowlist == tuple(COMMVAULT_ALLOWLIST)


@pytest.mark.parametrize("written, scope", [("custom", "Custom"), ("1-touch RECOVERY", "1-Touch recovery"),
                                            ("microsoft scim", "Microsoft SCIM"), ("HYPERSCALE", "Hyperscale")])
def test_scopes_are_named_in_any_letter_case(written: str, scope: str) -> None:
    body: dict[str, Any] = {"tokenName": "t", "scope": written}
    if scope == "Custom":
        body["apiEndpoints"] = ["/Client"]
    assert parse_new_token(body, SCOPES).scope == scope


REFUSED: list[tuple[str, Any, str]] = [
    ("not_an_object", [], "must be a JSON object"),
    ("no_name", {}, "tokenName is required"),
    ("blank_name", {"tokenName": "  "}, "tokenName is required"),
    ("name_with_newline", {"tokenName": "a\nb"}, "tokenName is required"),
    ("unknown_scope", {"tokenName": "t", "scope": "Admin"}, "scope must be one of All, Custom"),
    ("custom_without_endpoints", {"tokenName": "t", "scope": "Custom"}, "the Custom scope needs apiEndpoints"),
    ("custom_with_blank_lines_only", {"tokenName": "t", "scope": "Custom", "apiEndpoints": "\n \n"}, "needs apiEndpoints"),
    ("endpoints_on_all", {"tokenName": "t", "apiEndpoints": ["/Client"]}, "apiEndpoints belong to the Custom scope"),
    ("endpoint_without_slash", {"tokenName": "t", "scope": "Custom", "apiEndpoints": ["Client"]}, "entry 1 is not a path"),
    ("endpoint_with_dots", {"tokenName": "t", "scope": "Custom", "apiEndpoints": ["/Client", "/a/../b"]}, "entry 2 is not a path"),
    ("endpoint_encoded", {"tokenName": "t", "scope": "Custom", "apiEndpoints": ["/a%2Fb"]}, "entry 1 is not a path"),
    ("endpoint_with_query", {"tokenName": "t", "scope": "Custom", "apiEndpoints": ["/Client?x=1"]}, "entry 1 is not a path"),
    ("endpoints_not_text", {"tokenName": "t", "scope": "Custom", "apiEndpoints": [7]}, "apiEndpoints must be a list"),
    ("too_many_endpoints", {"tokenName": "t", "scope": "Custom", "apiEndpoints": [f"/e{i}" for i in range(257)]}, "at most 256"),
    ("bad_address", {"tokenName": "t", "ipAllowlist": ["10.0.0.1", "10.0.0.256"]}, "ipAllowlist entry 2"),
    ("leading_zero_octet", {"tokenName": "t", "ipAllowlist": ["010.0.0.1"]}, "ipAllowlist entry 1"),
    ("host_bits_in_cidr", {"tokenName": "t", "ipAllowlist": ["10.0.0.5/8"]}, "ipAllowlist entry 1"),
    ("backwards_range", {"tokenName": "t", "ipAllowlist": ["1.1.1.25 – 1.1.1.0"]}, "ends before it starts"),
    ("mixed_range", {"tokenName": "t", "ipAllowlist": ["1.1.1.1 - 2001:db8::1"]}, "mixes IPv4 and IPv6"),
    ("zone_id", {"tokenName": "t", "ipAllowlist": ["fe80::1%eth0"]}, "ipAllowlist entry 1"),
    ("expiry_not_a_number", {"tokenName": "t", "tokenExpiryTimestamp": "tomorrow"}, "tokenExpiryTimestamp must be a time in epoch seconds"),
    ("renewable_forever", {"tokenName": "t", "renewableUntilTimestamp": 0}, "renewableUntilTimestamp must be a time"),
    ("token_sent", {"tokenName": "t", "accessToken": "x"}, "accessToken is set by labgate"),
    ("unknown_field", {"tokenName": "t", "tokenType": 3}, "unknown field 'tokenType'"),
]


@pytest.mark.parametrize("body, expected", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_bad_create_requests_are_refused_with_what_to_send(body: Any, expected: str) -> None:
    with pytest.raises(ServiceAccountProblem) as caught:
        parse_new_token(body, SCOPES)
    assert expected in str(caught.value)


def test_a_scope_the_upstream_does_not_offer_is_refused() -> None:
    with pytest.raises(ServiceAccountProblem, match=r"this upstream offers no Hyperscale tokens \(offered: All, Custom\)"):
        parse_new_token({"tokenName": "t", "scope": "Hyperscale"}, ("All", "Custom"))


# -- lifetimes ---------------------------------------------------------------------------


def new_token(scope: str = "All", **values: Any) -> NewServiceToken:
    fields: dict[str, Any] = {"name": "t", "scope": scope, "api_endpoints": None, "ip_allowlist": None,
                              "token_expiry": None, "renewable_until": None}
    fields.update(values)
    return NewServiceToken(**fields)


@pytest.fixture
def config(tmp_path: Path) -> Config:
    return load(tmp_path)


def plan(config: Config, new: NewServiceToken, max_lifetime: float = 30 * DAY) -> Any:
    issuer = issuer_settings(access_token_max_lifetime=max_lifetime)
    return plan_token(new, SCOPE_TYPES[new.scope], config.packs["commvault"], issuer, NOW)


def test_a_renewable_token_lives_30_minutes_and_renews_for_90_days(config: Config) -> None:
    planned = plan(config, new_token(ip_allowlist=("10.0.0.1",)))
    assert (planned.token_type, planned.access_lifetime, planned.renewable_until) == ("all", 1800, NOW + 90 * DAY)
    assert (planned.path_prefixes, planned.client_ips) == (None, ("10.0.0.1",))


def test_renewal_may_end_sooner_never_later(config: Config) -> None:
    assert plan(config, new_token("Hyperscale", renewable_until=NOW + DAY)).renewable_until == NOW + DAY
    assert plan(config, new_token(renewable_until=NOW + 90 * DAY)).renewable_until == NOW + 90 * DAY
    for until in (NOW + 90 * DAY + 1, NOW, NOW - 5):
        with pytest.raises(ServiceAccountProblem, match="at most 90 days from now"):
            plan(config, new_token(renewable_until=until))


def test_a_renewable_tokens_first_access_token_may_expire_sooner(config: Config) -> None:
    assert plan(config, new_token(token_expiry=NOW + 600)).access_lifetime == 600
    with pytest.raises(ServiceAccountProblem, match="within the access token's lifetime"):
        plan(config, new_token(token_expiry=NOW + 1801))


def test_a_custom_token_carries_its_endpoints(config: Config) -> None:
    planned = plan(config, new_token("Custom", api_endpoints=("/Client", "/V2/Plan")))
    assert (planned.token_type, planned.path_prefixes) == ("custom", ("/Client", "/V2/Plan"))


def test_a_one_touch_token_carries_exactly_the_five_prefixes_and_lives_7_days(config: Config) -> None:
    planned = plan(config, new_token("1-Touch recovery"))
    assert planned.path_prefixes == ONE_TOUCH_PREFIXES == ("/Client", "/MediaAgent", "/ClientGroup", "/V4/ServerGroup", "/FirewallSummary")
    assert (planned.token_type, planned.access_lifetime, planned.renewable_until) == ("one-touch", 7 * DAY, None)
    assert plan(config, new_token("1-Touch recovery", token_expiry=NOW + 14 * DAY)).access_lifetime == 14 * DAY
    with pytest.raises(ServiceAccountProblem, match="at most 14 days from now"):
        plan(config, new_token("1-Touch recovery", token_expiry=NOW + 14 * DAY + 1))


def test_a_scim_token_lives_30_days_at_most_365(config: Config) -> None:
    assert plan(config, new_token("Microsoft SCIM")).access_lifetime == 30 * DAY
    assert plan(config, new_token("Microsoft SCIM", token_expiry=NOW + 365 * DAY), 366 * DAY).access_lifetime == 365 * DAY
    with pytest.raises(ServiceAccountProblem, match="at most 365 days"):
        plan(config, new_token("Microsoft SCIM", token_expiry=NOW + 366 * DAY), 366 * DAY)


def test_the_issuers_bound_cuts_the_default_and_refuses_beyond(config: Config) -> None:
    assert plan(config, new_token("Microsoft SCIM"), DAY).access_lifetime == DAY
    with pytest.raises(ServiceAccountProblem, match="at most 1 days from now"):
        plan(config, new_token("1-Touch recovery", token_expiry=NOW + 2 * DAY), DAY)


@pytest.mark.parametrize("scope", ["1-Touch recovery", "Microsoft SCIM"])
def test_one_touch_and_scim_tokens_do_not_renew(config: Config, scope: str) -> None:
    with pytest.raises(ServiceAccountProblem, match="are not renewable"):
        plan(config, new_token(scope, renewable_until=NOW + DAY))


def test_an_expiry_in_the_past_is_refused(config: Config) -> None:
    with pytest.raises(ServiceAccountProblem, match="must be in the future"):
        plan(config, new_token("Microsoft SCIM", token_expiry=NOW))


# -- records -----------------------------------------------------------------------------

RECORD = ServiceTokenRecord(
    "a1b2", "backup", "svc-backup", "commvault", "Custom", "custom", NOW, NOW + 1800, "f" * 64,
    ("/Client",), ("10.0.0.1",), NOW + 90 * DAY, "chain-1",
)


def test_a_record_survives_the_store() -> None:
    assert ServiceTokenRecord.from_json(RECORD.to_json()) == RECORD


def test_the_view_names_the_token_but_holds_no_secret() -> None:
    assert RECORD.view() == {
        "accessTokenId": "a1b2", "tokenName": "backup", "scope": "Custom", "userId": "svc-backup",
        "upstream": "commvault", "tokenType": "custom", "createdTimestamp": NOW,
        "renewableUntilTimestamp": NOW + 90 * DAY, "apiEndpoints": ["/Client"], "ipAllowlist": ["10.0.0.1"],
    }
    assert "f" * 64 not in str(RECORD.view()) and "chain-1" not in str(RECORD.view())


def test_a_renewable_scope_mapped_to_a_type_without_refresh_until_gets_one_token(config: Config) -> None:
    issuer = issuer_settings(access_token_max_lifetime=30 * DAY)
    planned = plan_token(new_token("All"), "one-touch", config.packs["commvault"], issuer, NOW)
    assert (planned.access_lifetime, planned.renewable_until) == (14 * DAY, None)  # the type's ttl; no refresh token
    with pytest.raises(ServiceAccountProblem, match=r"All tokens \(type 'one-touch'\) are not renewable"):
        plan_token(new_token("All", renewable_until=NOW + DAY), "one-touch", config.packs["commvault"], issuer, NOW)


def test_the_default_renew_until_is_the_whole_second_the_token_shows(config: Config) -> None:
    """Shown as renewableUntilTimestamp (whole seconds): renewing at that second is already too late."""
    issuer = issuer_settings(access_token_max_lifetime=30 * DAY)
    planned = plan_token(new_token(), SCOPE_TYPES["All"], config.packs["commvault"], issuer, NOW + 0.75)
    assert planned.renewable_until == math.floor(NOW + 0.75 + 90 * DAY)


EXAMPLES = Path(__file__).resolve().parents[2] / "deploy" / "examples"


@pytest.mark.parametrize("example", ["issuer.yaml", "lab.yaml"])
def test_the_shipped_configs_give_1_touch_7_days_and_scim_30_days(example: str) -> None:
    """Commvault: SCIM tokens live 30 days (at most 365) and 1-Touch tokens 7 days (at most 14), not renewable.
    The shipped configs sign that long; a config whose issuer bound is shorter cuts the default to it."""
    shipped = load_config(EXAMPLES / example)
    assert shipped.issuer is not None
    commvault = shipped.packs["commvault"]
    for scope, days in (("1-Touch recovery", 7), ("Microsoft SCIM", 30)):
        planned = plan_token(new_token(scope), SCOPE_TYPES[scope], commvault, shipped.issuer, NOW)
        assert planned.access_lifetime == days * DAY and planned.renewable_until is None
