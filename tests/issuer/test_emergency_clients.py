"""Emergency clients: the config that picks their token type by role, what a create may say, what the API shows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy.config import Config, load_config
from proxy.issuer.emergency_clients import (
    EmergencyClientProblem,
    EmergencyClientRecord,
    EmergencyClientTypes,
    RoleType,
    max_ttl_minutes,
    parse_new_client,
)
from proxy.tokens.issuer_source import IssuerSourceSettings
from proxy.yamlsource import ConfigError
from tests.issuer.issuing import issuer_settings
from tests.issuer.shipped import EMERGENCY, shipped_config, vcf_upstream

TYPES = EmergencyClientTypes(
    "emergency-client",
    (RoleType("viewer", "emergency-client-viewer"), RoleType("iam-admin", "emergency-client-iam")),
)


@pytest.mark.parametrize(
    "roles, expected",
    [
        ((), "emergency-client"),
        (("viewer",), "emergency-client-viewer"),
        (("iam-admin",), "emergency-client-iam"),
        (("iam-admin", "viewer"), "emergency-client-viewer"),  # the first listed role decides, not the client's order
        (("auditor",), "emergency-client"),  # roles naming no group get the ceiling (the vcf pack's convention)
    ],
    ids=["no_roles", "viewer", "iam_admin", "narrowest_listed_first_wins", "unlisted_role_gets_the_ceiling"],
)
def test_the_first_listed_role_the_client_holds_picks_the_type(roles: tuple[str, ...], expected: str) -> None:
    assert TYPES.token_type_for(roles) == expected


def load(tmp_path: Path, **source: Any) -> Config:
    return load_config(shipped_config(tmp_path, [vcf_upstream(**source)]))


def test_the_config_maps_roles_to_the_packs_types(tmp_path: Path) -> None:
    settings = load(tmp_path).upstreams[0].token_source
    assert isinstance(settings, IssuerSourceSettings)
    assert settings.emergency_clients == TYPES
    assert settings.service_accounts is None


def test_without_the_section_the_upstream_has_no_emergency_clients(tmp_path: Path) -> None:
    upstream = vcf_upstream()
    del upstream["token_source"]["emergency_clients"]
    settings = load_config(shipped_config(tmp_path, [upstream])).upstreams[0].token_source
    assert isinstance(settings, IssuerSourceSettings) and settings.emergency_clients is None


def problems(tmp_path: Path, emergency: Any, **source: Any) -> list[str]:
    path = shipped_config(tmp_path, [vcf_upstream(**source)])
    text = path.read_text()
    upstream = vcf_upstream(**source)
    upstream["token_source"]["emergency_clients"] = emergency
    path = shipped_config(tmp_path, [upstream])
    assert text != path.read_text() or emergency == EMERGENCY
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return [str(p) for p in caught.value.problems]


BAD = [
    ("unknown_ceiling", {"token_type": "root"}, "unknown token type 'root' in pack 'vcf'"),
    ("no_ceiling", {"roles": []}, "missing required key 'token_type'"),
    ("unknown_role_type", {"token_type": "emergency-client", "roles": [{"role": "x", "token_type": "god"}]},
     "unknown token type 'god' in pack 'vcf'"),
    ("role_without_type", {"token_type": "emergency-client", "roles": [{"role": "x"}]}, "missing required key 'token_type'"),
    ("role_twice", {"token_type": "emergency-client", "roles": [
        {"role": "viewer", "token_type": "emergency-client-viewer"}, {"role": "viewer", "token_type": "emergency-client"}]},
     "role 'viewer' is listed twice"),
    ("unknown_key", {"token_type": "emergency-client", "roles_claim": "roles"}, "unknown key 'roles_claim' in emergency_clients"),
    ("role_not_a_mapping", {"token_type": "emergency-client", "roles": ["viewer"]}, "each entry of 'roles' needs 'role' and 'token_type'"),
    ("not_a_mapping", ["emergency-client"], "'emergency_clients' must be a mapping"),
]


@pytest.mark.parametrize("emergency, expected", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_emergency_client_settings_are_refused_at_their_line(tmp_path: Path, emergency: Any, expected: str) -> None:
    found = problems(tmp_path, emergency)
    assert any(expected in p for p in found), found
    assert all(p.startswith(f"{tmp_path / 'labgate.yaml'}:") and not p.split(":")[1].startswith(" ") for p in found)


def test_a_type_the_upstream_does_not_accept_is_refused(tmp_path: Path) -> None:
    found = problems(tmp_path, EMERGENCY, token_types=["emergency-client", "emergency-client-viewer"])
    assert any("token type 'emergency-client-iam' is not among this upstream's token_types" in p for p in found), found


def test_the_line_named_is_the_bad_types(tmp_path: Path) -> None:
    upstream = vcf_upstream()
    upstream["token_source"]["emergency_clients"] = {"token_type": "emergency-client", "roles": [
        {"role": "viewer", "token_type": "emergency-client-viewer"}, {"role": "ops", "token_type": "emergency-client-ops"}]}
    path = shipped_config(tmp_path, [upstream])
    line = next(i for i, text in enumerate(path.read_text().splitlines(), 1) if "emergency-client-ops" in text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert [str(p).split(": ", 1)[0] for p in caught.value.problems] == [f"{path}:{line}"]


# -- create requests ---------------------------------------------------------------------

GOOD = {"clientId": "emergency-client-id", "clientName": "Emergency Access Client",
        "clientDescription": "API client for emergency access purposes", "accessTokenTtl": 60}


def test_the_seeds_request_is_read() -> None:
    new = parse_new_client({**GOOD, "roles": [{"roleName": "viewer"}, "iam-admin", {"roleName": "viewer"}]}, 1440)
    assert (new.client_id, new.client_name, new.ttl_minutes) == ("emergency-client-id", "Emergency Access Client", 60)
    assert new.client_description == "API client for emergency access purposes"
    assert new.roles == ("viewer", "iam-admin")  # duplicates once


def test_the_minimal_request_is_read() -> None:
    new = parse_new_client({"clientId": "c", "clientName": "n", "accessTokenTtl": 1}, 1)
    assert (new.client_description, new.roles) == (None, ())


REFUSED = [
    ("not_an_object", ["x"], "must be a JSON object"),
    ("no_client_id", {"clientName": "n", "accessTokenTtl": 5}, "clientId is required"),
    ("empty_client_id", {**GOOD, "clientId": ""}, "clientId is required"),
    ("client_id_with_slash", {**GOOD, "clientId": "a/b"}, "clientId is required"),
    ("client_id_too_long", {**GOOD, "clientId": "c" * 129}, "clientId is required"),
    ("client_id_not_text", {**GOOD, "clientId": 7}, "clientId is required"),
    ("no_name", {"clientId": "c", "accessTokenTtl": 5}, "clientName is required"),
    ("empty_name", {**GOOD, "clientName": ""}, "clientName is required"),
    ("name_with_newline", {**GOOD, "clientName": "a\nb"}, "without control characters"),
    ("description_not_text", {**GOOD, "clientDescription": 5}, "clientDescription must be"),
    ("no_ttl", {"clientId": "c", "clientName": "n"}, "accessTokenTtl is required"),
    ("zero_ttl", {**GOOD, "accessTokenTtl": 0}, "from 1 to 1440"),
    ("negative_ttl", {**GOOD, "accessTokenTtl": -5}, "from 1 to 1440"),
    ("fractional_ttl", {**GOOD, "accessTokenTtl": 1.5}, "whole minutes"),
    ("string_ttl", {**GOOD, "accessTokenTtl": "60"}, "whole minutes"),
    ("bool_ttl", {**GOOD, "accessTokenTtl": True}, "whole minutes"),
    ("ttl_beyond_the_issuers_bound", {**GOOD, "accessTokenTtl": 1441}, "issuer.access_token_max_lifetime"),
    # VCF's own example, under a 24h bound: said as what it is, never "is required".
    ("vcf_example_beyond_a_day", {**GOOD, "accessTokenTtl": 259200},
     "accessTokenTtl 259200 minutes (180 days) is longer than labgate signs tokens here: at most 1440 minutes (1 days)"),
    ("roles_not_a_list", {**GOOD, "roles": "viewer"}, "roles must be an array"),
    ("role_object_without_name", {**GOOD, "roles": [{"name": "viewer"}]}, '{"roleName": "<name>"}'),
    ("role_empty", {**GOOD, "roles": [""]}, '{"roleName": "<name>"}'),
    ("too_many_roles", {**GOOD, "roles": [f"r{i}" for i in range(65)]}, "at most 64 roles"),
    ("token_sent", {**GOOD, "accessToken": "eyJ"}, "accessToken is set by labgate"),
    ("status_sent", {**GOOD, "accessTokenStatus": "ACTIVE"}, "accessTokenStatus is set by labgate"),
    ("unknown_field", {**GOOD, "ssoRealmId": "r"}, "unknown field 'ssoRealmId'"),
]


@pytest.mark.parametrize("body, expected", [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_bad_create_requests_are_refused_with_what_to_send(body: Any, expected: str) -> None:
    with pytest.raises(EmergencyClientProblem) as caught:
        parse_new_client(body, 1440)
    assert expected in str(caught.value)


def test_the_documents_own_example_is_taken_under_the_shipped_bound() -> None:
    """VCF's Create Emergency Client example sends ``"accessTokenTtl" : 259200``; the shipped configs sign that long."""
    example = {"clientId": "emergency-client-id", "clientName": "Emergency Access Client",
               "clientDescription": "API client for emergency access purposes", "accessTokenTtl": 259200}
    for example_config in ("issuer.yaml", "lab.yaml"):
        shipped = load_config(Path(__file__).resolve().parents[2] / "deploy" / "examples" / example_config)
        assert shipped.issuer is not None
        longest = max_ttl_minutes(shipped.issuer, shipped.packs["vcf"], TYPES.token_types)
        assert parse_new_client(example, longest).ttl_minutes == 259200


def test_the_longest_ttl_is_the_issuers_bound_and_the_types_lifetimes(tmp_path: Path) -> None:
    config = load(tmp_path)
    pack = config.packs["vcf"]
    assert max_ttl_minutes(issuer_settings(access_token_max_lifetime=86400.0), pack, TYPES.token_types) == 1440
    assert max_ttl_minutes(issuer_settings(access_token_max_lifetime=90.0), pack, TYPES.token_types) == 1
    commvault = config.packs["commvault"]  # ttl 30m: a longer token would be refused by its own type
    assert max_ttl_minutes(issuer_settings(access_token_max_lifetime=86400.0), commvault, ("all",)) == 30


# -- records -----------------------------------------------------------------------------

RECORD = EmergencyClientRecord(
    "ec-1", "Emergency", None, 60, ("viewer",), "vcf", "emergency-client-viewer", 1000.0, "f" * 64, 4600.0
)


def test_the_status_is_active_until_expiry_then_expired() -> None:
    assert RECORD.status(4599.9) == "ACTIVE"
    assert RECORD.status(4600.0) == "EXPIRED"


def test_the_status_is_unknown_when_the_record_cannot_say() -> None:
    assert EmergencyClientRecord.from_json('{"client_id": "c", "client_name": "n", "client_description": null, '
                                           '"ttl_minutes": 5, "roles": [], "upstream": "vcf", "token_type": "t", '
                                           '"created_at": 1}').status(0) == "UNKNOWN"


def test_a_record_survives_the_store() -> None:
    assert EmergencyClientRecord.from_json(RECORD.to_json()) == RECORD


def test_the_view_has_vcfs_names_and_never_a_token() -> None:
    issuer = issuer_settings(url="https://labgate.lab.example")
    assert RECORD.view(issuer, 2000.0) == {
        "clientId": "ec-1",
        "clientName": "Emergency",
        "accessTokenTtl": 60,
        "accessTokenExpirationDate": 4600000,
        "accessTokenStatus": "ACTIVE",
        "roles": [{"roleName": "viewer"}],
        "tokenEndpointUrl": "https://labgate.lab.example/oauth/token",
        "oidcIssuerUrl": "https://labgate.lab.example",
        "upstream": "vcf",
        "tokenType": "emergency-client-viewer",
    }
