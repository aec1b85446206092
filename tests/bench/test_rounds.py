"""The benchmark's rounds: each put together from its interleaved slices, then judged against the bar."""

from __future__ import annotations

import math

import pytest

from bench.report import bar_verdict
from bench.run import joined


def piece(requests: int, warmed: int, cpu: float, seconds: float, p50: float, others: float = 0.0) -> dict[str, float]:
    return {
        "requests": requests, "requests_total": requests + warmed, "requests_per_second": requests / 2.0,
        "p50_ms": p50, "p99_ms": p50 * 3, "non_2xx": 0, "errors": 0,
        "cpu_seconds": cpu, "seconds": seconds, "others_seconds": others, "wall": seconds,
    }


def test_cpu_per_request_is_the_whole_round_s_cpu_over_all_its_requests() -> None:
    # The first slice carries the warm-up (its requests and CPU counted on both sides).
    round_ = joined([piece(10_000, 4_000, 1.4, 3.0, 2.0), piece(10_000, 0, 1.2, 2.0, 4.0), piece(8_000, 0, 0.9, 2.0, 3.0)])
    assert round_["requests_total"] == 32_000
    assert round_["cpu_us_per_request"] == pytest.approx(3.5 / 32_000 * 1e6)
    assert round_["cpu_busy"] == pytest.approx(3.5 / 7.0)
    assert round_["p50_ms"] == 3.0  # the median slice's
    assert round_["requests_per_second"] == pytest.approx((5_000 + 5_000 + 4_000) / 3)


def test_errors_add_up_and_an_unknown_cpu_time_stays_unknown() -> None:
    first, second = piece(100, 0, math.nan, 2.0, 1.0), piece(100, 0, 0.01, 2.0, 1.0)
    second["non_2xx"], second["errors"] = 3, 1
    round_ = joined([first, second])
    assert (round_["non_2xx"], round_["errors"]) == (3, 1)
    assert math.isnan(round_["cpu_us_per_request"])


@pytest.mark.parametrize(
    ("median", "rounds", "errors", "verdict"),
    [
        (2.10, [2.05, 2.10, 2.31], False, "PASS"),
        (2.10, [2.05, 2.10, 1.93], False, "FAIL"),  # the median passes, one round does not: not claimed
        (1.98, [2.40, 1.98, 1.90], False, "FAIL"),
        (2.50, [2.50, 2.60, 2.40], True, "FAIL"),  # error answers are cheap answers
        (2.10, [math.nan, 2.10, 2.20], False, "PASS"),  # a round with no CPU figure says nothing either way
    ],
)
def test_a_store_passes_only_when_the_median_and_every_round_reach_the_bar(
    median: float, rounds: list[float], errors: bool, verdict: str
) -> None:
    assert bar_verdict(median, rounds, errors=errors) == verdict
