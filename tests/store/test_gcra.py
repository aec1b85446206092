"""GCRA in process: spending an allowed request's budgets directly answers what the full check answers."""

from __future__ import annotations

import random

import pytest

from proxy.store.gcra import LocalRates, Rate, RateCheck, admit, grant, remaining_after

NOW = 1_700_000_000.0


def test_a_rate_is_worked_out_as_a_check_works_it_out() -> None:
    check = RateCheck("k", 60.0 / 7, 7)
    rate = Rate.of(check.interval, check.capacity)
    assert (rate.interval, rate.capacity, rate.period) == (check.interval, check.capacity, check.period)


def test_spending_lets_the_whole_budget_go_then_refuses_and_writes_nothing() -> None:
    rates, per_minute = LocalRates(), Rate.of(20.0, 3)
    written = [rates.spend(["k"], [per_minute], NOW) for _ in range(4)]
    assert written[3] is None
    assert [remaining_after(w[0], 20.0, 3, NOW) for w in written[:3] if w is not None] == [2, 1, 0]
    verdict = rates.check([RateCheck("k", 20.0, 3)], NOW + 20.0)  # the refusal did not push the budget back
    assert verdict.allowed and verdict.states[0].remaining == 0


def test_spending_several_budgets_is_all_or_nothing() -> None:
    rates = LocalRates()
    wide, narrow = Rate.of(6.0, 10), Rate.of(60.0, 1)
    assert rates.spend(["wide", "narrow"], [wide, narrow], NOW) is not None
    assert rates.spend(["wide", "narrow"], [wide, narrow], NOW) is None  # narrow refuses: wide not spent either
    alone = rates.check([RateCheck("wide", 6.0, 10)], NOW)
    assert alone.allowed and alone.states[0].remaining == 8


def test_spending_forgets_full_budgets_past_the_sweep_size() -> None:
    rates, rate = LocalRates(sweep_above=3), Rate.of(1.0, 5)
    for key in "abcd":
        assert rates.spend([key], [rate], NOW) is not None
    assert rates.spend(["e"], [rate], NOW + 10.0) is not None  # a, b, c, d are full again: forgotten
    assert rates.check([RateCheck("a", 1.0, 5)], NOW + 10.0).states[0].remaining == 4


def test_spending_answers_exactly_what_the_full_check_answers() -> None:
    """Random traffic, one or two limits per request, some sharing a key: the same decisions, budgets and resets.

    Each side keeps its own budgets, so a single different write would show in every later decision.
    """
    chance = random.Random(20261206)
    shapes = [(60.0 / 7, 7), (3.0, 2), (3600.0 / 1000, 1000), (0.1, 1)]
    spent, checked = LocalRates(), LocalRates()
    now, outcomes = NOW, []
    for _ in range(3000):
        now += chance.choice([0.0, 0.001, 0.05, 0.5, 2.9, 3.0, 8.6, 60.0])
        picked = chance.sample(range(len(shapes)), chance.choice([1, 2]))
        keys = [f"k{i}" if chance.random() < 0.8 else "shared" for i in picked]
        if len(set(keys)) < len(keys):
            keys = [f"k{i}" for i in picked]
        checks = [RateCheck(key, *shapes[i]) for key, i in zip(keys, picked)]
        written = spent.spend(keys, [Rate.of(*shapes[i]) for i in picked], now)
        verdict = checked.check(checks, now)
        assert (written is not None) == verdict.allowed
        outcomes.append(verdict.allowed)
        if written is not None:
            assert [remaining_after(tat, c.interval, c.capacity, now) for tat, c in zip(written, checks)] == [
                s.remaining for s in verdict.states
            ]
            assert [tat - now for tat in written] == [s.reset for s in verdict.states]
    assert outcomes.count(True) > 200 and outcomes.count(False) > 200  # both ways, often


def random_case(generator: random.Random, exact: bool) -> tuple[RateCheck, float | None]:
    """A limit and a stored TAT: on the budget's boundaries with intervals floats hold exactly, or between them."""
    capacity = generator.randint(2, 40)
    interval = generator.choice([0.25, 0.5, 1.0, 2.0] if exact else [0.001, 0.1, 60.0 / 7, 36.0])
    if not exact:  # half an interval off the grid: a full budget (no TAT) would sit on its boundary
        return RateCheck("k", interval, capacity), NOW + (generator.randint(0, capacity) + 0.5) * interval
    offset = generator.randint(0, capacity)
    return RateCheck("k", interval, capacity), generator.choice([None, NOW - 5.0, NOW + offset * interval])


def one_by_one(tat: float | None, check: RateCheck, most: int) -> tuple[int, float | None]:
    """Requests admitted one after another at NOW (:func:`admit`), at most ``most``: how many, and the last TAT."""
    admitted, current = 0, tat
    while admitted < most and (after := admit(current, check.interval, check.period, NOW)) is not None:
        admitted, current = admitted + 1, after
    return admitted, current if admitted else None


@pytest.mark.parametrize("exact", [True, False])
def test_a_grant_is_as_many_requests_as_admitted_one_by_one(exact: bool) -> None:
    """:func:`grant` for ``most`` units agrees with :func:`admit` run ``most`` times (``most = 1`` included)."""
    generator = random.Random(11)
    for _ in range(1000):
        check, tat = random_case(generator, exact)
        most = generator.randint(1, check.capacity)
        new_tat, granted = grant(tat, check, most, NOW)
        admitted, last = one_by_one(tat, check, most)
        assert granted.granted == admitted
        assert new_tat == (None if last is None else pytest.approx(last))
        if admitted and exact:  # what is left: the requests that would still be admitted after the grant
            assert granted.remaining == one_by_one(new_tat, check, check.capacity)[0]
        elif not admitted:
            assert granted.retry_after > 0
