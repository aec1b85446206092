"""The policy test runner: cases decided as `labgate explain` decides them, mismatches and
uncovered rules reported at their file and line, bad test files refused whole."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.policy.testing import (
    MissingPath,
    PackResult,
    describe_failure,
    find_files,
    load_suite,
    report,
    run_suite,
)
from proxy.yamlsource import ConfigError

PACK = """\
pack: demo
paths: case-insensitive
token_types:
  reader:
    routes:
      - GET /api/hosts
      - POST /api/backups/{id}/restore
    query:
      allow: [offset, limit]
  admin:
    path_prefixes:
      - /api
    deny:
      - "* /api/tokens"
  scoped:
    path_prefixes: [/]
    requires_token_prefixes: true
    client_ips: ["10.0.0.0/8"]
  rollout:
    routes: [GET /api/hosts]
    query: {allow: []}
    shadow: true
"""

COVERING_CASES = """\
pack: demo
cases:
  - name: reader lists hosts
    token_type: reader
    request: GET /api/hosts?limit=10
    expect: {decision: allow, rule: demo/reader/routes/GET /api/hosts}
  - name: reader restores
    token_type: reader
    request: POST /api/backups/b1/restore
    expect: {decision: allow, reason: allowed, rule: "demo/reader/routes/POST /api/backups/{id}/restore"}
  - name: reader cannot sort
    token_type: reader
    request: GET /api/hosts?SORT=name
    expect: {decision: deny, reason: query_param_not_allowed, rule: demo/reader/query}
  - name: admin reaches the api
    token_type: admin
    request: DELETE /api/hosts/h1
    expect: {decision: allow, rule: demo/admin/path_prefixes//api}
  - name: admin cannot touch tokens
    token_type: admin
    request: GET /API/Tokens/
    expect: {decision: deny, reason: operation_forbidden, rule: "demo/admin/deny/* /api/tokens"}
  - name: scoped token inside its own list
    token_type: scoped
    request: GET /client/1
    client_ip: 10.1.2.3
    token: {path_prefixes: [/Client]}
    expect: {decision: allow, rule: demo/scoped/path_prefixes//}
  - name: scoped token needs its own list
    token_type: scoped
    request: GET /client/1
    client_ip: 10.1.2.3
    expect: {decision: deny, reason: token_scope_missing, rule: demo/scoped/token_path_prefixes}
  - name: scoped token from outside the network
    token_type: scoped
    request: GET /client/1
    client_ip: 192.0.2.1
    token: {path_prefixes: [/Client]}
    expect: {decision: deny, reason: client_ip_not_allowed, rule: demo/scoped/client_ips}
  - name: rollout would refuse any parameter, but only logs it
    token_type: rollout
    request: GET /api/hosts?limit=1
    expect: {decision: deny, reason: query_param_not_allowed, rule: demo/rollout/query, shadow: true}
  - name: rollout lists hosts
    token_type: rollout
    request: GET /api/hosts
    expect: {decision: allow, rule: demo/rollout/routes/GET /api/hosts}
"""


def write(folder: Path, pack: str = PACK, cases: str | None = COVERING_CASES) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "demo.yaml").write_text(pack)
    if cases is not None:
        (folder / "demo.tests.yaml").write_text(cases)
    return folder


def run(*paths: Path, allow_uncovered: bool = False) -> tuple[tuple[PackResult, ...], list[str], bool]:
    results = run_suite(load_suite(list(paths)))
    lines, passed = report(results, allow_uncovered=allow_uncovered)
    return results, lines, passed


def without(cases: str, *names: str) -> str:
    """The test file minus the named cases."""
    blocks = cases.split("\n  - ")
    return "\n  - ".join(b for b in blocks if not any(b.startswith(f"name: {n}") for n in names))


def load_problems(tmp_path: Path, cases: str) -> list[str]:
    write(tmp_path, cases=cases)
    with pytest.raises(ConfigError) as caught:
        load_suite([tmp_path])
    return [str(p) for p in caught.value.problems]


def test_cases_that_match_and_cover_every_rule_pass(tmp_path: Path) -> None:
    (result,), lines, passed = run(write(tmp_path))
    assert passed
    assert len(result.results) == 10 and not result.failures and not result.uncovered
    assert result.rules == 10
    assert lines[-1] == "1 pack, 10 cases: 10 passed, 0 failed; 0 rules uncovered"
    assert lines[0] == f"{tmp_path / 'demo.yaml'}: pack 'demo': 10 cases, 0 failed; 10/10 rules covered"


def test_a_mismatch_names_the_case_its_line_what_was_expected_and_what_came(tmp_path: Path) -> None:
    cases = COVERING_CASES.replace(
        "    request: GET /api/hosts?SORT=name\n    expect: {decision: deny, reason: query_param_not_allowed, rule: demo/reader/query}",
        "    request: GET /api/hosts?SORT=name\n    expect: {decision: allow, rule: demo/reader/routes/GET /api/hosts}",
    )
    (result,), lines, passed = run(write(tmp_path, cases=cases))
    assert not passed
    (failure,) = result.failures
    assert failure.mismatches == ("decision", "rule")
    assert lines[0] == (
        f"{tmp_path / 'demo.tests.yaml'}:11: case 'reader cannot sort': expected allow (rule demo/reader/routes/GET /api/hosts), "
        "got deny query_param_not_allowed (rule demo/reader/query): query parameter 'sort' is not allowed"
    )
    assert lines[-1] == "1 pack, 10 cases: 9 passed, 1 failed; 0 rules uncovered"


@pytest.mark.parametrize(
    "expect, mismatches",
    [
        ("{decision: deny, reason: route_not_allowed, rule: demo/reader/query}", ("reason",)),
        ("{decision: deny, reason: query_param_not_allowed, rule: demo/reader/routes}", ("rule",)),
        ("{decision: deny, rule: null}", ("rule",)),
        ("{decision: deny, reason: query_param_not_allowed, rule: demo/reader/query, shadow: true}", ("shadow",)),
    ],
    ids=["reason_only", "rule_only", "rule_expected_none", "shadow_expected_on_an_enforced_type"],
)
def test_each_part_of_the_expectation_is_compared(tmp_path: Path, expect: str, mismatches: tuple[str, ...]) -> None:
    cases = COVERING_CASES.replace(
        "expect: {decision: deny, reason: query_param_not_allowed, rule: demo/reader/query}", f"expect: {expect}"
    )
    (result,), _, passed = run(write(tmp_path, cases=cases))
    assert not passed
    assert [f.mismatches for f in result.failures] == [mismatches]


def test_a_shadow_denial_counts_as_a_denial_and_shadow_false_catches_it(tmp_path: Path) -> None:
    cases = COVERING_CASES.replace("rule: demo/rollout/query, shadow: true}", "rule: demo/rollout/query, shadow: false}")
    (result,), lines, _ = run(write(tmp_path, cases=cases))
    (failure,) = result.failures
    assert failure.mismatches == ("shadow",)
    assert failure.decision.allowed and failure.decision.shadow
    assert "expected deny query_param_not_allowed (rule demo/rollout/query) enforced, got deny query_param_not_allowed (rule demo/rollout/query) in shadow mode" in lines[0]


def test_a_shadow_denial_expected_as_allow_fails(tmp_path: Path) -> None:
    cases = COVERING_CASES.replace(
        "expect: {decision: deny, reason: query_param_not_allowed, rule: demo/rollout/query, shadow: true}",
        "expect: {decision: allow, rule: demo/rollout/query}",
    )
    (result,), _, _ = run(write(tmp_path, cases=cases))
    assert [f.mismatches for f in result.failures] == [("decision",)]


def test_rules_no_case_reaches_are_reported_at_their_line_in_the_pack(tmp_path: Path) -> None:
    cases = without(COVERING_CASES, "reader restores", "admin cannot touch tokens")
    (result,), lines, passed = run(write(tmp_path, cases=cases))
    assert not passed and not result.failures
    pack_file = tmp_path / "demo.yaml"
    assert [(u.line, u.rule) for u in result.uncovered] == [
        (7, "demo/reader/routes/POST /api/backups/{id}/restore"),
        (14, "demo/admin/deny/* /api/tokens"),
    ]
    assert f"{pack_file}:7: rule 'demo/reader/routes/POST /api/backups/{{id}}/restore' decided no case" in lines
    assert lines[-1].endswith("; 2 rules uncovered")


def test_allow_uncovered_turns_uncovered_rules_into_warnings(tmp_path: Path) -> None:
    cases = without(COVERING_CASES, "admin cannot touch tokens")
    _, lines, passed = run(write(tmp_path, cases=cases), allow_uncovered=True)
    assert passed
    assert lines[0] == f"warning: {tmp_path / 'demo.yaml'}:14: rule 'demo/admin/deny/* /api/tokens' decided no case"


def test_a_pack_without_cases_leaves_every_rule_uncovered(tmp_path: Path) -> None:
    (result,), _, passed = run(write(tmp_path, cases=None))
    assert not passed
    assert result.results == () and len(result.uncovered) == result.rules == 10


def test_cases_of_several_files_cover_one_pack_together(tmp_path: Path) -> None:
    first, second = COVERING_CASES.split("  - name: admin reaches the api\n")
    write(tmp_path, cases=first)
    (tmp_path / "demo-more.tests.yaml").write_text("pack: demo\ncases:\n  - name: admin reaches the api\n" + second)
    (result,), _, passed = run(tmp_path)
    assert passed and len(result.results) == 10


def test_path_contract_refusals_name_no_rule(tmp_path: Path) -> None:
    cases = COVERING_CASES + (
        "  - name: dot segments\n    token_type: admin\n    request: GET /api/%2e%2e/x\n"
        "    expect: {decision: deny, reason: ambiguous_path, rule: null}\n"
        "  - name: trace\n    token_type: admin\n    request: TRACE /api/x\n"
        "    expect: {decision: deny, reason: method_not_supported, rule: null}\n"
    )
    (result,), _, passed = run(write(tmp_path, cases=cases))
    assert passed and len(result.results) == 12


def test_a_token_ip_allowlist_in_a_case_narrows_the_type(tmp_path: Path) -> None:
    cases = COVERING_CASES + (
        "  - name: en dash range\n    token_type: admin\n    request: GET /api/x\n    client_ip: 1.1.1.26\n"
        '    token: {client_ips: ["1.1.1.0 – 1.1.1.25"]}\n'
        "    expect: {decision: deny, reason: client_ip_not_allowed, rule: demo/admin/token_client_ips}\n"
    )
    _, _, passed = run(write(tmp_path, cases=cases))
    assert passed


BAD_CASE_FILES = [
    ("not_a_mapping", "- a\n- b\n", "demo.tests.yaml:1: a policy test file must be a mapping"),
    ("unknown_file_key", "pack: demo\nsuite: x\ncases: []\n", "demo.tests.yaml:2: unknown key 'suite' in a policy test file"),
    ("missing_pack", "cases:\n  - name: a\n", "demo.tests.yaml:1: missing required key 'pack'"),
    ("unknown_pack", "pack: nope\ncases: []\n", "demo.tests.yaml:1: pack 'nope' is not among the packs loaded (known: demo)"),
    ("missing_cases", "pack: demo\n", "demo.tests.yaml:1: missing required key 'cases'"),
    ("empty_cases", "pack: demo\ncases: []\n", "demo.tests.yaml:2: 'cases' is empty"),
    ("case_not_a_mapping", "pack: demo\ncases:\n  - GET /api/hosts\n", "demo.tests.yaml:3: a case must be a mapping"),
    (
        "unknown_case_key",
        "pack: demo\ncases:\n  - name: a\n    token_type: reader\n    request: GET /api/hosts\n    methd: GET\n"
        "    expect: {decision: allow, rule: null}\n",
        "demo.tests.yaml:6: unknown key 'methd' in a case",
    ),
    (
        "unknown_token_type",
        "pack: demo\ncases:\n  - name: a\n    token_type: emergency\n    request: GET /api/hosts\n"
        "    expect: {decision: allow, rule: null}\n",
        "demo.tests.yaml:4: token type 'emergency' is not in pack 'demo' (known: reader, admin, scoped, rollout)",
    ),
    (
        "request_without_method",
        "pack: demo\ncases:\n  - name: a\n    token_type: reader\n    request: /api/hosts\n"
        "    expect: {decision: allow, rule: null}\n",
        "demo.tests.yaml:5: request '/api/hosts' must be 'METHOD /path?query'",
    ),
    (
        "bad_client_ip",
        "pack: demo\ncases:\n  - name: a\n    token_type: reader\n    request: GET /api/hosts\n    client_ip: 010.0.0.1\n"
        "    expect: {decision: allow, rule: null}\n",
        "demo.tests.yaml:6: client_ip:",
    ),
    (
        "unknown_token_key",
        "pack: demo\ncases:\n  - name: a\n    token_type: reader\n    request: GET /api/hosts\n    token:\n      scopes: [x]\n"
        "    expect: {decision: allow, rule: null}\n",
        "demo.tests.yaml:7: unknown key 'scopes' in token",
    ),
    (
        "bad_token_ip_at_its_line",
        "pack: demo\ncases:\n  - name: a\n    token_type: reader\n    request: GET /api/hosts\n    token:\n      client_ips:\n"
        "        - 10.0.0.1\n        - 1.1.1.0 - 1.1.0.9\n    expect: {decision: allow, rule: null}\n",
        "demo.tests.yaml:9: client_ips:",
    ),
    (
        "bad_token_prefix",
        "pack: demo\ncases:\n  - name: a\n    token_type: reader\n    request: GET /api/hosts\n    token:\n"
        "      path_prefixes: [/Client/../V4]\n    expect: {decision: allow, rule: null}\n",
        "demo.tests.yaml:7: token path_prefixes must be plain paths",
    ),
    (
        "missing_expect",
        "pack: demo\ncases:\n  - name: a\n    token_type: reader\n    request: GET /api/hosts\n",
        "demo.tests.yaml:3: missing required key 'expect'",
    ),
    (
        "unknown_expect_key",
        "pack: demo\ncases:\n  - name: a\n    token_type: reader\n    request: GET /api/hosts\n    expect:\n"
        "      decision: allow\n      rule: null\n      status: 200\n",
        "demo.tests.yaml:9: unknown key 'status' in expect",
    ),
    (
        "bad_decision",
        "pack: demo\ncases:\n  - name: a\n    token_type: reader\n    request: GET /api/hosts\n    expect:\n"
        "      decision: allowed\n      rule: null\n",
        "demo.tests.yaml:7: decision must be allow or deny, not 'allowed'",
    ),
    (
        "missing_rule",
        "pack: demo\ncases:\n  - name: a\n    token_type: reader\n    request: GET /api/hosts\n    expect:\n      decision: allow\n",
        "demo.tests.yaml:7: missing required key 'rule'",
    ),
    (
        "unknown_reason",
        "pack: demo\ncases:\n  - name: a\n    token_type: reader\n    request: GET /api/hosts\n    expect:\n"
        "      decision: deny\n      reason: forbidden\n      rule: null\n",
        "demo.tests.yaml:8: unknown reason 'forbidden'",
    ),
    (
        "reason_contradicts_decision",
        "pack: demo\ncases:\n  - name: a\n    token_type: reader\n    request: GET /api/hosts\n    expect:\n"
        "      decision: allow\n      reason: route_not_allowed\n      rule: null\n",
        "demo.tests.yaml:8: reason 'route_not_allowed' contradicts decision 'allow'",
    ),
    (
        "shadow_not_a_boolean",
        "pack: demo\ncases:\n  - name: a\n    token_type: reader\n    request: GET /api/hosts\n    expect:\n"
        "      decision: allow\n      rule: null\n      shadow: yes please\n",
        "demo.tests.yaml:9: 'shadow' must be true or false",
    ),
    (
        "duplicate_case_name",
        "pack: demo\ncases:\n  - name: a\n    token_type: reader\n    request: GET /api/hosts\n    expect: {decision: allow, rule: null}\n"
        "  - name: a\n    token_type: reader\n    request: GET /api/hosts\n    expect: {decision: allow, rule: null}\n",
        "demo.tests.yaml:7: case name 'a' is used twice (first at line 3)",
    ),
    ("duplicate_yaml_key", "pack: demo\npack: demo\ncases: []\n", "demo.tests.yaml:2: invalid YAML: duplicate key 'pack'"),
    ("invalid_yaml", "pack: demo\ncases: [\n", "demo.tests.yaml:"),
]


@pytest.mark.parametrize("text, expected", [c[1:] for c in BAD_CASE_FILES], ids=[c[0] for c in BAD_CASE_FILES])
def test_bad_test_files_are_refused_at_their_file_and_line(tmp_path: Path, text: str, expected: str) -> None:
    found = load_problems(tmp_path, text)
    assert any(p.startswith(f"{tmp_path}/{expected}") for p in found), found


def test_every_problem_of_every_file_is_reported_at_once(tmp_path: Path) -> None:
    write(tmp_path, cases="pack: demo\ncases:\n  - name: a\n    token_type: nobody\n    request: GET\n    expect: {decision: maybe, rule: null}\n")
    (tmp_path / "broken.yaml").write_text("pack: broken\ntoken_types:\n  t:\n    routes: [FETCH /x]\n")
    with pytest.raises(ConfigError) as caught:
        load_suite([tmp_path])
    found = [str(p) for p in caught.value.problems]
    assert any(p.startswith(f"{tmp_path / 'broken.yaml'}:4: route 'FETCH /x'") for p in found)
    for line in (4, 5, 6):
        assert any(p.startswith(f"{tmp_path / 'demo.tests.yaml'}:{line}:") for p in found), found


def test_a_pack_defined_twice_is_refused(tmp_path: Path) -> None:
    write(tmp_path)
    (tmp_path / "zz-copy.yaml").write_text("description: a copy\npack: demo\ntoken_types: {t: {routes: [GET /a]}}\n")
    with pytest.raises(ConfigError) as caught:
        load_suite([tmp_path])
    assert [str(p) for p in caught.value.problems] == [
        f"{tmp_path / 'zz-copy.yaml'}:2: pack 'demo' is also defined in {tmp_path / 'demo.yaml'}"
    ]


def test_a_pack_file_brings_its_tests_and_a_test_file_its_pack(tmp_path: Path) -> None:
    write(tmp_path)
    assert find_files([tmp_path / "demo.yaml"]) == ([tmp_path / "demo.yaml"], [tmp_path / "demo.tests.yaml"])
    assert find_files([tmp_path / "demo.tests.yaml"]) == ([tmp_path / "demo.yaml"], [tmp_path / "demo.tests.yaml"])
    assert find_files([tmp_path, tmp_path / "demo.yaml"]) == ([tmp_path / "demo.yaml"], [tmp_path / "demo.tests.yaml"])


def test_a_missing_path_is_refused(tmp_path: Path) -> None:
    with pytest.raises(MissingPath, match="no such file or folder"):
        find_files([tmp_path / "nowhere"])


def test_describe_failure_says_when_no_rule_decided(tmp_path: Path) -> None:
    cases = COVERING_CASES + (
        "  - name: dot segments\n    token_type: admin\n    request: GET /api/%2e%2e/x\n"
        "    expect: {decision: allow, rule: demo/admin/path_prefixes//api}\n"
    )
    (result,), _, _ = run(write(tmp_path, cases=cases))
    (failure,) = result.failures
    assert describe_failure(failure) == (
        f"{tmp_path / 'demo.tests.yaml'}:48: case 'dot segments': expected allow (rule demo/admin/path_prefixes//api), "
        f"got deny ambiguous_path (no rule): {failure.decision.detail}"
    )
    assert failure.decision.detail
