"""The packs in policies/: their own test cases pass and cover every rule, and they
carry the token type names and lifetimes operators' scripts rely on."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli import main
from proxy.policy.compile import CompiledPack
from proxy.policy.testing import load_suite, run_suite

POLICIES = Path(__file__).parent.parent.parent / "policies"
SUITE = {under_test.pack.name: under_test for under_test in load_suite([POLICIES])}

# The names the issue fixes for scripts and docs (more types are allowed).
TOKEN_TYPES = {
    "simplivity": {"password", "emergency"},
    "vcf": {"emergency-client"},
    "hcp": {"password"},
    "greenlake": {"api-client"},
    "commvault": {"all", "custom", "hyperscale", "one-touch", "scim"},
}
# The vendor document each pack follows, as its header names it.
VENDOR_DOCUMENTS = {
    "simplivity": "Requesting authentication by emergency grant",
    "vcf": "Create Emergency Client",
    "hcp": "Access and authentication",
    "greenlake": "How to use an API access token for HPE GreenLake",
    "commvault": "access tokens for service accounts",
}
MINUTE, HOUR, DAY = 60.0, 3600.0, 86400.0


def pack(name: str) -> CompiledPack:
    return SUITE[name].pack


def test_labgate_test_passes_over_the_shipped_policies(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["test", str(POLICIES)])
    out, err = capsys.readouterr()
    assert code == 0, out + err
    assert out.splitlines()[-1].endswith(" failed; 0 rules uncovered")
    assert ", 0 failed;" in out.splitlines()[-1]


def test_the_five_families_are_shipped() -> None:
    assert set(SUITE) == set(TOKEN_TYPES)


@pytest.mark.parametrize("name", sorted(TOKEN_TYPES))
def test_each_pack_has_at_least_20_cases_covering_every_rule(name: str) -> None:
    (result,) = run_suite([SUITE[name]])
    assert len(result.results) >= 20
    assert not result.failures and not result.uncovered
    types_with_cases = {r.case.token_type for r in result.results}
    assert types_with_cases == set(pack(name).token_types)


@pytest.mark.parametrize("name", sorted(TOKEN_TYPES))
def test_each_pack_carries_the_documented_token_type_names(name: str) -> None:
    assert TOKEN_TYPES[name] <= set(pack(name).token_types)


@pytest.mark.parametrize("name", sorted(VENDOR_DOCUMENTS))
def test_each_pack_file_starts_by_naming_its_vendor_document(name: str) -> None:
    head = (POLICIES / f"{name}.yaml").read_text().split("\npack:", 1)[0]
    assert all(line.startswith("#") for line in head.splitlines())
    assert "Vendor document:" in head and VENDOR_DOCUMENTS[name] in head.replace("\n# ", " ")


@pytest.mark.parametrize(
    "name, token_type, ttl, idle, absolute, refresh_until",
    [
        ("simplivity", "emergency", None, 10 * MINUTE, 24 * HOUR, None),
        ("simplivity", "password", None, 10 * MINUTE, 24 * HOUR, None),
        ("hcp", "password", 7200.0, None, None, None),
        ("greenlake", "api-client", 7200.0, None, None, None),
        ("commvault", "all", 30 * MINUTE, None, None, 90 * DAY),
        ("commvault", "custom", 30 * MINUTE, None, None, 90 * DAY),
        ("commvault", "hyperscale", 30 * MINUTE, None, None, 90 * DAY),
        ("commvault", "one-touch", 14 * DAY, None, None, None),
        ("commvault", "scim", 365 * DAY, None, None, None),
    ],
)
def test_lifetimes_follow_the_vendor_documents(
    name: str, token_type: str, ttl: float | None, idle: float | None, absolute: float | None, refresh_until: float | None
) -> None:
    lifetimes = pack(name).token_types[token_type].spec.lifetimes
    assert (lifetimes.ttl, lifetimes.idle, lifetimes.absolute, lifetimes.refresh_until) == (ttl, idle, absolute, refresh_until)


def test_commvault_paths_are_case_insensitive_and_one_touch_has_exactly_five_prefixes() -> None:
    commvault = pack("commvault")
    assert commvault.pack.case_insensitive_paths
    assert commvault.token_types["one-touch"].spec.path_prefixes == (
        "/Client", "/MediaAgent", "/ClientGroup", "/V4/ServerGroup", "/FirewallSummary",
    )
    assert commvault.token_types["custom"].spec.requires_token_prefixes


def test_simplivity_emergency_allows_paging_and_nothing_else_in_the_query() -> None:
    query = pack("simplivity").token_types["emergency"].spec.query
    assert query is not None and query.mode == "allow"
    assert query.names == frozenset({"offset", "limit"})


def test_simplivity_restore_original_belongs_to_the_restore_route_alone() -> None:
    route_queries = pack("simplivity").token_types["emergency"].spec.route_queries
    assert [(route.text, rule.mode, rule.names) for route, rule in route_queries] == [
        ("POST /api/backups/{bkpId}/restore", "allow", frozenset({"restore_original"})),
    ]
