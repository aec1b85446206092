"""Claim matchers pick a token type: strictly, first match wins, no match is no type."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.tokens.matchers import TypeRule, compile_conditions, pick_token_type

P = pytest.param


@pytest.mark.parametrize(
    "match, claims, expected",
    [
        # a bare scalar means equals
        P({"grant_type": "emergency"}, {"grant_type": "emergency"}, True, id="scalar_equal"),
        P({"grant_type": "emergency"}, {"grant_type": "password"}, False, id="scalar_different"),
        P({"grant_type": "emergency"}, {}, False, id="scalar_claim_absent"),
        P({"level": 1}, {"level": 1}, True, id="int_equal"),
        P({"admin": True}, {"admin": 1}, False, id="true_is_not_1"),
        P({"level": 1}, {"level": True}, False, id="1_is_not_true"),
        P({"admin": {"equals": False}}, {"admin": 0}, False, id="false_is_not_0"),
        P({"level": 1}, {"level": 1.0}, False, id="1_is_not_1.0"),
        P({"role": {"equals": "admin"}}, {"role": "admin"}, True, id="equals_form"),
        P({"role": {"equals": "admin"}}, {"role": ["admin"]}, False, id="equals_is_not_contains"),
        # contains: a list, or a space-separated string (OAuth scope)
        P({"scope": {"contains": "svt:restore"}}, {"scope": "svt:read svt:restore"}, True, id="scope_word"),
        P({"scope": {"contains": "read"}}, {"scope": "read"}, True, id="scope_single_word"),
        P({"scope": {"contains": "admin"}}, {"scope": "admin-lite read"}, False, id="scope_whole_words_only"),
        P({"scope": {"contains": "read"}}, {"scope": "readwrite"}, False, id="scope_no_substring"),
        P({"scope": {"contains": "read"}}, {}, False, id="contains_claim_absent"),
        P({"roles": {"contains": "ops"}}, {"roles": ["dev", "ops"]}, True, id="list_member"),
        P({"roles": {"contains": "ops"}}, {"roles": ["operations"]}, False, id="list_no_substring"),
        P({"roles": {"contains": "ops"}}, {"roles": {"ops": 1}}, False, id="object_is_not_a_list"),
        P({"groups": {"contains": 7}}, {"groups": [7, 8]}, True, id="list_int_member"),
        P({"groups": {"contains": 1}}, {"groups": [True]}, False, id="list_true_is_not_1"),
        # in
        P({"tier": {"in": ["gold", "silver"]}}, {"tier": "silver"}, True, id="in_listed"),
        P({"tier": {"in": ["gold", "silver"]}}, {"tier": "bronze"}, False, id="in_not_listed"),
        P({"level": {"in": [1, 2]}}, {"level": True}, False, id="in_true_is_not_1"),
        P({"flag": {"in": [True]}}, {"flag": 1}, False, id="in_1_is_not_true"),
        # present
        P({"tenant": {"present": True}}, {"tenant": None}, True, id="present_even_if_null"),
        P({"tenant": {"present": True}}, {}, False, id="present_but_absent"),
        P({"tenant": {"present": False}}, {}, True, id="absent_as_required"),
        P({"tenant": {"present": False}}, {"tenant": "t1"}, False, id="absent_but_present"),
        # dotted paths
        P({"realm_access.roles": {"contains": "svt"}}, {"realm_access": {"roles": ["svt"]}}, True, id="dotted_path"),
        P({"realm_access.roles": {"contains": "svt"}}, {"realm_access": ["svt"]}, False, id="dotted_path_through_list"),
        P({"a.b.c": 1}, {"a": {"b": {"c": 1}}}, True, id="dotted_three_levels"),
        P({"a.b.c": 1}, {"a": {"b": "c"}}, False, id="dotted_through_string"),
        P({"a.b": {"present": True}}, {"a": {"b": None}}, True, id="dotted_present"),
        P({"a.b": {"present": False}}, {"a": "b"}, True, id="dotted_absent"),
        P({"https://example.com/role": "ops"}, {"https://example.com/role": "ops"}, True, id="dotted_name_as_written"),
        # combinations
        P({}, {"anything": 1}, True, id="empty_match_matches_all"),
        P({"a": "x", "b": "y"}, {"a": "x", "b": "y"}, True, id="all_hold"),
        P({"a": "x", "b": "y"}, {"a": "x", "b": "z"}, False, id="one_fails"),
        # HCP reads the realm Local in any letter case ("omit the realm option for the request, or
        # specify a realm value of Local"; its own example sends realm=local).
        P({"realm": {"in_any_case": ["Local", "marketingUsers"]}}, {"realm": "LOCAL"}, True, id="in_any_case_upper"),
        P({"realm": {"in_any_case": ["Local", "marketingUsers"]}}, {"realm": "MarketingUsers"}, True, id="in_any_case_mixed"),
        P({"realm": {"in_any_case": ["Local"]}}, {"realm": "Locals"}, False, id="in_any_case_other_name"),
        P({"realm": {"in_any_case": ["sales"]}}, {"realm": "ſales"}, False, id="in_any_case_non_ascii_lookalike"),
        P({"realm": {"in_any_case": ["1"]}}, {"realm": 1}, False, id="in_any_case_not_text"),
        P({"realm": {"equals_any_case": "Local"}}, {"realm": "local"}, True, id="equals_any_case"),
        P({"realm": {"equals_any_case": "Local"}}, {}, False, id="equals_any_case_absent"),
    ],
)
def test_conditions(match: dict[str, Any], claims: dict[str, Any], expected: bool) -> None:
    assert TypeRule("t", compile_conditions(match)).matches(claims) is expected


@pytest.mark.parametrize(
    "match, message",
    [
        P({"role": {"regex": "x"}}, "unknown condition 'regex'", id="unknown_operator"),
        P({"role": {"equals": "a", "contains": "b"}}, "exactly one of", id="two_operators"),
        P({"role": {}}, "exactly one of", id="no_operator"),
        P({"role": ["a", "b"]}, "exactly one of", id="bare_list"),
        P({"role": None}, "exactly one of", id="null"),
        P({"role": {"in": "a"}}, "non-empty list", id="in_not_a_list"),
        P({"role": {"in": []}}, "non-empty list", id="in_empty"),
        P({"role": {"in": [["a"]]}}, "non-empty list", id="in_nested_list"),
        P({"role": {"present": "yes"}}, "true or false", id="present_not_bool"),
        P({"role": {"present": 1}}, "true or false", id="present_one"),
        P({"role": {"contains": ["a"]}}, "single value", id="contains_list"),
        P({"role": {"equals": {"a": 1}}}, "single value", id="equals_mapping"),
        P({"a..b": "x"}, "dotted path", id="empty_path_part"),
        P({".a": "x"}, "dotted path", id="leading_dot"),
        P({"": "x"}, "dotted path", id="empty_name"),
        P({7: "x"}, "dotted path", id="name_not_a_string"),
        P({"realm": {"in_any_case": "Local"}}, "non-empty list of ASCII texts", id="in_any_case_not_a_list"),
        P({"realm": {"in_any_case": []}}, "non-empty list of ASCII texts", id="in_any_case_empty"),
        P({"realm": {"in_any_case": ["ſales"]}}, "non-empty list of ASCII texts", id="in_any_case_non_ascii"),
        P({"realm": {"equals_any_case": ["a"]}}, "one ASCII text", id="equals_any_case_list"),
        P({"realm": {"equals_any_case": 1}}, "one ASCII text", id="equals_any_case_number"),
    ],
)
def test_bad_matchers_are_refused(match: dict[Any, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compile_conditions(match)


def test_first_matching_rule_wins_and_no_match_is_no_type() -> None:
    rules = [
        TypeRule("emergency", compile_conditions({"grant_type": "emergency"})),
        TypeRule("password", compile_conditions({"grant_type": {"in": ["password", "emergency"]}})),
        TypeRule("scoped", compile_conditions({"scope": {"contains": "api"}})),
    ]
    assert pick_token_type(rules, {"grant_type": "emergency"}) == "emergency"
    assert pick_token_type(rules, {"grant_type": "password", "scope": "api"}) == "password"
    assert pick_token_type(rules, {"grant_type": "client_credentials", "scope": "api"}) == "scoped"
    assert pick_token_type(rules, {"grant_type": "client_credentials"}) is None
    assert pick_token_type([], {"grant_type": "emergency"}) is None


def test_an_empty_match_is_a_catch_all_only_where_it_is_listed() -> None:
    rules = [
        TypeRule("admin", compile_conditions({"role": "admin"})),
        TypeRule("anyone", compile_conditions({})),
        TypeRule("never", compile_conditions({"role": "reader"})),
    ]
    assert pick_token_type(rules, {"role": "admin"}) == "admin"
    assert pick_token_type(rules, {"role": "reader"}) == "anyone"


def test_compiled_rules_are_immutable_values() -> None:
    rule = TypeRule("t", compile_conditions({"tier": {"in": ["gold"]}}))
    assert rule == TypeRule("t", compile_conditions({"tier": {"in": ["gold"]}}))
    assert hash(rule) == hash(TypeRule("t", compile_conditions({"tier": {"in": ["gold"]}})))
