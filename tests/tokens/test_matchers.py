"""Claim matchers pick a token type: strictly, first match wins, no match is no type."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.tokens.matchers import TypeRule, compile_conditions, pick_token_type


@pytest.mark.parametrize(
    "match, claims, expected",
    [
        ({"grant_type": "emergency"}, {"grant_type": "emergency"}, True),
        ({"grant_type": "emergency"}, {"grant_type": "password"}, False),
        ({"grant_type": "emergency"}, {}, False),
        ({"admin": True}, {"admin": 1}, False),  # True is not 1
        ({"level": 1}, {"level": True}, False),
        ({"level": 1}, {"level": 1}, True),
        ({"scope": {"contains": "svt:restore"}}, {"scope": "svt:read svt:restore"}, True),
        ({"scope": {"contains": "admin"}}, {"scope": "admin-lite read"}, False),  # whole words only
        ({"roles": {"contains": "ops"}}, {"roles": ["dev", "ops"]}, True),
        ({"roles": {"contains": "ops"}}, {"roles": ["operations"]}, False),
        ({"roles": {"contains": "ops"}}, {"roles": {"ops": 1}}, False),
        ({"tier": {"in": ["gold", "silver"]}}, {"tier": "silver"}, True),
        ({"tier": {"in": ["gold", "silver"]}}, {"tier": "bronze"}, False),
        ({"tenant": {"present": True}}, {"tenant": None}, True),
        ({"tenant": {"present": True}}, {}, False),
        ({"tenant": {"present": False}}, {}, True),
        ({"realm_access.roles": {"contains": "svt"}}, {"realm_access": {"roles": ["svt"]}}, True),
        ({"realm_access.roles": {"contains": "svt"}}, {"realm_access": ["svt"]}, False),
        ({"https://example.com/role": "ops"}, {"https://example.com/role": "ops"}, True),  # a dotted claim name as written
        ({}, {"anything": 1}, True),
        ({"a": "x", "b": "y"}, {"a": "x", "b": "z"}, False),  # all conditions must hold
    ],
)
def test_conditions(match: dict[str, Any], claims: dict[str, Any], expected: bool) -> None:
    assert TypeRule("t", compile_conditions(match)).matches(claims) is expected


@pytest.mark.parametrize(
    "match, message",
    [
        ({"role": {"regex": "x"}}, "unknown condition 'regex'"),
        ({"role": {"equals": "a", "contains": "b"}}, "exactly one of"),
        ({"role": ["a", "b"]}, "exactly one of"),
        ({"role": {"in": "a"}}, "non-empty list"),
        ({"role": {"in": []}}, "non-empty list"),
        ({"role": {"present": "yes"}}, "true or false"),
        ({"role": {"contains": ["a"]}}, "single value"),
        ({"a..b": "x"}, "dotted path"),
        ({"": "x"}, "dotted path"),
    ],
)
def test_bad_matchers_are_refused(match: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        compile_conditions(match)


def test_first_matching_rule_wins_and_no_match_is_no_type() -> None:
    rules = [
        TypeRule("emergency", compile_conditions({"grant_type": "emergency"})),
        TypeRule("password", compile_conditions({"grant_type": {"in": ["password", "emergency"]}})),
    ]
    assert pick_token_type(rules, {"grant_type": "emergency"}) == "emergency"
    assert pick_token_type(rules, {"grant_type": "password"}) == "password"
    assert pick_token_type(rules, {"grant_type": "client_credentials"}) is None
