"""Pack files: what loads, and every mistake reported at its file and line."""

from __future__ import annotations

import pytest

from proxy.policy.load import load_pack_text
from proxy.yamlsource import ConfigError


def problems(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_pack_text(text, "pack.yaml")
    return [str(p) for p in caught.value.problems]


def test_a_full_token_type_loads() -> None:
    pack = load_pack_text(
        """
pack: demo
paths: case-insensitive
token_types:
  t:
    description: all features
    routes: ["GET /a/{id}", POST /a]
    path_prefixes: [/b/, /c]
    deny: ["* /a/{id}/secret"]
    query: {allow: [offset, Limit]}
    client_ips: [10.0.0.1, "1.1.1.0 – 1.1.1.25"]
    requires_token_prefixes: false
    lifetimes: {ttl: 30m, idle: 10m, absolute: 24h, refresh_until: 90d}
""",
        "demo.yaml",
    )
    t = pack.token_types["t"]
    assert pack.case_insensitive_paths
    assert [r.text for r in t.routes] == ["GET /a/{id}", "POST /a"]
    assert t.path_prefixes == ("/b", "/c")
    assert t.query is not None and t.query.names == frozenset({"offset", "limit"})
    assert (t.lifetimes.ttl, t.lifetimes.idle, t.lifetimes.absolute, t.lifetimes.refresh_until) == (
        1800.0, 600.0, 86400.0, 90 * 86400.0,
    )
    assert t.client_ips is not None and len(t.client_ips) == 2


BAD_PACKS = [
    ("unknown_top_key", "pack: p\ncolour: red\ntoken_types: {t: {routes: [GET /a]}}\n", "pack.yaml:2: unknown key 'colour'"),
    ("unknown_type_key", "pack: p\ntoken_types:\n  t:\n    routes: [GET /a]\n    rotes: []\n", "pack.yaml:5: unknown key 'rotes'"),
    ("bad_method", "pack: p\ntoken_types:\n  t:\n    routes:\n      - FETCH /a\n", "pack.yaml:5: route 'FETCH /a': method must be one of"),
    ("trace_is_no_route_method", "pack: p\ntoken_types:\n  t:\n    routes:\n      - TRACE /a\n", "pack.yaml:5:"),
    ("star_method_only_in_deny", "pack: p\ntoken_types:\n  t:\n    routes:\n      - '* /a'\n", "pack.yaml:5:"),
    ("route_without_slash", "pack: p\ntoken_types:\n  t:\n    routes:\n      - GET a/b\n", "must start with '/'"),
    ("route_with_partial_param", "pack: p\ntoken_types:\n  t:\n    routes:\n      - GET /a/{id}.json\n", "must be a whole segment"),
    ("route_with_double_slash", "pack: p\ntoken_types:\n  t:\n    routes:\n      - GET /a//b\n", "empty segment"),
    ("route_with_dot_segment", "pack: p\ntoken_types:\n  t:\n    routes:\n      - GET /a/../b\n", "dot segments"),
    ("route_with_trailing_slash", "pack: p\ntoken_types:\n  t:\n    routes:\n      - GET /a/\n", "must not end with '/'"),
    ("route_listed_twice", "pack: p\ntoken_types:\n  t:\n    routes:\n      - GET /a/{x}\n      - GET /a/{y}\n", "pack.yaml:6: routes: 'GET /a/{y}' is listed twice"),
    ("route_missing_path", "pack: p\ntoken_types:\n  t:\n    routes:\n      - GET\n", "must be 'METHOD /path'"),
    ("bad_ip", "pack: p\ntoken_types:\n  t:\n    routes: [GET /a]\n    client_ips:\n      - 10.0.0.1\n      - 010.0.0.2\n", "pack.yaml:7: client_ips:"),
    ("bad_cidr", "pack: p\ntoken_types:\n  t:\n    routes: [GET /a]\n    client_ips:\n      - 10.0.0.1/33\n", "pack.yaml:6:"),
    ("reversed_range", "pack: p\ntoken_types:\n  t:\n    routes: [GET /a]\n    client_ips:\n      - 1.1.1.9 - 1.1.1.1\n", "pack.yaml:6:"),
    ("query_both_modes", "pack: p\ntoken_types:\n  t:\n    routes: [GET /a]\n    query: {allow: [a], deny: [b]}\n", "exactly one of 'allow'"),
    ("query_bad_name", "pack: p\ntoken_types:\n  t:\n    routes: [GET /a]\n    query:\n      allow:\n        - 'so rt'\n", "pack.yaml:7: query parameter name"),
    ("bad_duration", "pack: p\ntoken_types:\n  t:\n    routes: [GET /a]\n    lifetimes:\n      idle: ten minutes\n", "pack.yaml:6: bad duration"),
    ("negative_duration", "pack: p\ntoken_types:\n  t:\n    routes: [GET /a]\n    lifetimes:\n      idle: -5\n", "must be positive"),
    ("idle_longer_than_absolute", "pack: p\ntoken_types:\n  t:\n    routes: [GET /a]\n    lifetimes: {idle: 2d, absolute: 1d}\n", "idle cannot be longer than absolute"),
    ("type_allows_nothing", "pack: p\ntoken_types:\n  t:\n    description: nothing\n", "allows nothing"),
    ("bad_type_name", "pack: p\ntoken_types:\n  Bad Name:\n    routes: [GET /a]\n", "token type name 'Bad Name'"),
    ("no_token_types", "pack: p\ntoken_types: {}\n", "at least one token type"),
    ("missing_pack_name", "token_types:\n  t:\n    routes: [GET /a]\n", "missing required key 'pack'"),
    ("duplicate_yaml_key", "pack: p\ntoken_types:\n  t:\n    routes: [GET /a]\n  t:\n    routes: [GET /b]\n", "pack.yaml:5: invalid YAML: duplicate key 't'"),
    ("yaml_syntax_error", "pack: p\ntoken_types: [\n", "pack.yaml:"),
    ("not_a_mapping", "- just a list\n", "pack.yaml:1: a policy pack must be a mapping"),
    ("bool_where_list", "pack: p\ntoken_types:\n  t:\n    routes: true\n", "pack.yaml:4: 'routes' must be a list"),
    ("bad_paths_mode", "pack: p\npaths: sometimes\ntoken_types:\n  t:\n    routes: [GET /a]\n", "pack.yaml:2: 'paths' must be one of"),
    ("prefix_with_param", "pack: p\ntoken_types:\n  t:\n    path_prefixes: ['/a/{id}']\n", "params"),
    ("subtree_in_an_allow_route", "pack: p\ntoken_types:\n  t:\n    routes: ['GET /a/**']\n", "pack.yaml:4: route 'GET /a/**': '/**' (everything below) is for deny rules only"),
    ("subtree_not_at_the_end", "pack: p\ntoken_types:\n  t:\n    routes: [GET /a]\n    deny: ['* /a/**/b']\n", "pack.yaml:5:"),
    ("subtree_twice", "pack: p\ntoken_types:\n  t:\n    routes: [GET /a]\n    deny: ['* /a/**', '* /a/**']\n", "listed twice"),
    ("route_mapping_without_query", "pack: p\ntoken_types:\n  t:\n    routes:\n      - {route: GET /a}\n", "pack.yaml:5: a route written as a mapping needs 'route'"),
    ("route_mapping_without_route", "pack: p\ntoken_types:\n  t:\n    routes:\n      - GET /b\n      - {query: {allow: [a]}}\n", "pack.yaml:6: a route written as a mapping needs 'route'"),
    ("route_mapping_unknown_key", "pack: p\ntoken_types:\n  t:\n    routes:\n      - route: GET /a\n        query: {allow: [a]}\n        limit: 5\n", "pack.yaml:7: unknown key 'limit'"),
    ("route_mapping_bad_route", "pack: p\ntoken_types:\n  t:\n    routes:\n      - {route: FETCH /a, query: {allow: [a]}}\n", "pack.yaml:5: route 'FETCH /a': method must be one of"),
    ("route_mapping_bad_query_name", "pack: p\ntoken_types:\n  t:\n    routes:\n      - route: GET /a\n        query:\n          allow:\n            - 'so rt'\n", "pack.yaml:8: query parameter name"),
    ("route_mapping_both_modes", "pack: p\ntoken_types:\n  t:\n    routes:\n      - route: GET /a\n        query: {allow: [a], deny: [b]}\n", "pack.yaml:6: query needs exactly one of"),
    ("route_mapping_twice", "pack: p\ntoken_types:\n  t:\n    routes:\n      - GET /a/{x}\n      - {route: 'GET /a/{y}', query: {allow: []}}\n", "pack.yaml:6: routes: 'GET /a/{y}' is listed twice"),
    ("route_mapping_in_deny", "pack: p\ntoken_types:\n  t:\n    routes: [GET /a]\n    deny:\n      - {route: GET /b, query: {allow: []}}\n", "pack.yaml:6: items of 'deny' must be non-empty strings, not a mapping"),
    ("shadow_not_a_boolean", "pack: p\ntoken_types:\n  t:\n    routes: [GET /a]\n    shadow: yes please\n", "pack.yaml:5: 'shadow' must be true or false"),
]


@pytest.mark.parametrize("text, expected", [c[1:] for c in BAD_PACKS], ids=[c[0] for c in BAD_PACKS])
def test_bad_pack_is_refused_with_file_and_line(text: str, expected: str) -> None:
    found = problems(text)
    assert any(expected in p for p in found), found


def test_a_route_may_carry_its_own_query_rule() -> None:
    pack = load_pack_text(
        "pack: p\ntoken_types:\n  t:\n    routes:\n      - GET /a\n"
        "      - route: POST /b/{id}/restore\n        query: {allow: [restore_original]}\n"
        "    query: {allow: [offset]}\n"
    )
    spec = pack.token_types["t"]
    assert [r.text for r in spec.routes] == ["GET /a", "POST /b/{id}/restore"]
    assert [(r.text, q.names) for r, q in spec.route_queries] == [("POST /b/{id}/restore", frozenset({"restore_original"}))]
    assert spec.query is not None and spec.query.names == frozenset({"offset"})


def test_every_problem_is_reported_at_once() -> None:
    found = problems("pack: p\ntoken_types:\n  t:\n    routes:\n      - FETCH /a\n      - GET b\n")
    assert len(found) == 2
    assert found[0].startswith("pack.yaml:5:") and found[1].startswith("pack.yaml:6:")


def test_shadow_mode_is_off_unless_a_type_asks_for_it() -> None:
    pack = load_pack_text("pack: p\ntoken_types:\n  strict: {routes: [GET /a]}\n  rollout: {routes: [GET /a], shadow: true}\n")
    assert (pack.token_types["strict"].shadow, pack.token_types["rollout"].shadow) == (False, True)


def test_deny_except_names_exact_operations_under_deny_rules() -> None:
    pack = load_pack_text(
        'pack: p\ntoken_types:\n  t:\n    path_prefixes: [/]\n    deny: ["* /V4/AccessToken/**"]\n'
        "    deny_except: [POST /V4/AccessToken/Renew]\n    token_prefix_match: starting-with\n"
    )
    assert [r.text for r in pack.token_types["t"].deny_except] == ["POST /V4/AccessToken/Renew"]
    assert pack.token_types["t"].token_prefix_match == "starting-with"


@pytest.mark.parametrize(
    "body, expected",
    [
        ('    deny: ["* /a/**"]\n    deny_except: ["GET /a/**"]\n', "'/**' (everything below) is for deny rules only"),
        ('    deny_except: ["POST /a/b"]\n', "deny_except makes exceptions to 'deny' rules: this type has none"),
        ('    deny: ["* /a/**"]\n    deny_except: ["* /a/b"]\n', "method must be one of"),
        ("    token_prefix_match: prefix\n", "'token_prefix_match' must be one of whole-segments, starting-with"),
    ],
    ids=["subtree", "no-deny", "any-method", "unknown-reading"],
)
def test_bad_exceptions_and_readings_are_refused(body: str, expected: str) -> None:
    found = problems("pack: p\ntoken_types:\n  t:\n    path_prefixes: [/]\n" + body)
    assert any(expected in p for p in found), found
