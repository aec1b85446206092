"""Rate limits as written in packs: the short form, the mapping, and what each means."""

from __future__ import annotations

import pytest

from proxy.policy.load import load_pack_text
from proxy.policy.rates import RESERVE_LIFETIME, RateLimit, rate_limit_fields


def limit_of(value: str) -> RateLimit | None:
    pack = load_pack_text(f"pack: p\ntoken_types:\n  t:\n    routes: [GET /a]\n    rate_limit: {value}\n")
    return pack.token_types["t"].rate_limit


@pytest.mark.parametrize(
    "written, requests, per",
    [
        ("60/min", 60, 60.0), ("60/minute", 60, 60.0), ("1000/hour", 1000, 3600.0), ("1000/h", 1000, 3600.0),
        ("5/s", 5, 1.0), ("100/30s", 100, 30.0), ("5/2h", 5, 7200.0), ("10/day", 10, 86400.0), ("'7 / min'", 7, 60.0),
    ],
)
def test_the_short_form_is_requests_per_unit_or_duration(written: str, requests: int, per: float) -> None:
    assert limit_of(written) == RateLimit(requests, per, "token", "closed")


def test_the_mapping_form_says_whose_budget_and_how_a_store_failure_ends() -> None:
    limit = limit_of("{requests: 600, per: 1h, by: client_id, store_failure: open}")
    assert limit == RateLimit(600, 3600.0, "client_id", "open")
    assert limit is not None and limit.interval == 6.0 and limit.text == "600/h by client_id"


def test_a_type_without_a_rate_limit_has_none() -> None:
    pack = load_pack_text("pack: p\ntoken_types:\n  t:\n    routes: [GET /a]\n")
    assert pack.token_types["t"].rate_limit is None and pack.token_types["t"].max_in_flight is None


def test_a_limit_may_reserve_units_from_a_shared_budget_for_a_bounded_time() -> None:
    limit = limit_of("{requests: 1000, per: 1s, reserve: 64}")
    assert limit == RateLimit(1000, 1.0, "token", "closed", 64)
    assert limit is not None and limit.reserve_lifetime == RESERVE_LIFETIME == 1.0
    assert limit_of("{requests: 600, per: 1h}") == RateLimit(600, 3600.0)  # no reserve: every request checked


def test_explain_shows_a_reserve_only_when_one_is_set() -> None:
    reserved = limit_of("{requests: 100, per: 1m, reserve: 8}")
    assert reserved is not None and rate_limit_fields(reserved)["reserve"] == 8
    exact = limit_of("100/min")
    assert exact is not None and "reserve" not in rate_limit_fields(exact)
