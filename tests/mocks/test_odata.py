"""The GreenLake OData filter subset the mock Compute Ops Management understands."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.mocks.odata import FilterError, parse_filter, property_paths

ITEMS: list[dict[str, Any]] = [
    {"id": "a", "name": "MXQ1", "generation": 1, "state": {"managed": True, "subscriptionState": "SUBSCRIBED"}, "tier": None},
    {"id": "b", "name": "MXQ2", "generation": 3, "state": {"managed": False, "subscriptionState": "REQUIRED"}, "tier": "x"},
    {"id": "c", "name": "CZ'9", "generation": 2, "state": {"managed": True, "subscriptionState": "REQUIRED"}, "tier": None},
]
KNOWN = property_paths(ITEMS[0])


def ids(text: str) -> list[str]:
    keep = parse_filter(text, KNOWN)
    return [item["id"] for item in ITEMS if keep(item)]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("state/managed eq true", ["a", "c"]),
        ("state/managed ne true", ["b"]),
        ("generation gt 1", ["b", "c"]),
        ("generation ge 2", ["b", "c"]),
        ("generation lt 2", ["a"]),
        ("generation le 2", ["a", "c"]),
        ("name eq 'CZ''9'", ["c"]),
        ("name in ('MXQ1', 'CZ''9')", ["a", "c"]),
        ("contains(name,'MXQ')", ["a", "b"]),
        ("state/managed eq true and state/subscriptionState eq 'REQUIRED'", ["c"]),
        ("generation eq 1 or generation eq 3", ["a", "b"]),
        ("not contains(name,'MXQ')", ["c"]),
        ("not (generation eq 1 or generation eq 3)", ["c"]),
        ("generation eq 1 or generation eq 2 and state/managed eq false", ["a"]),  # and binds tighter
        ("tier eq null", ["a", "c"]),
        ("tier gt 'a'", ["b"]),  # no ordering against null
        ("name gt 1", []),  # no ordering across types
    ],
)
def test_supported_filters_select_the_matching_items(text: str, expected: list[str]) -> None:
    assert ids(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "name",
        "name eq",
        "name like 'a'",
        "nosuch eq 1",
        "state/nosuch eq true",
        "name eq 'open",
        "(name eq 'a'",
        "name eq 'a')",
        "contains(name, 1)",
        "name eq 'a' and",
        "eq eq 1",
        "name eq 'a' ; drop",
        "name in ()",
        "x" * 3000,
    ],
)
def test_a_filter_outside_the_subset_is_an_error(text: str) -> None:
    with pytest.raises(FilterError):
        parse_filter(text, KNOWN)
