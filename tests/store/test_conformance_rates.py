"""The store conformance suite, every backend: rate limits (GCRA, proxy/store/gcra.py) and reservations."""

from __future__ import annotations

import asyncio
import time

import pytest

from proxy.store.base import Store
from proxy.store.gcra import RateCheck


def per_minute(key: str, requests: int) -> RateCheck:
    return RateCheck(key, 60.0 / requests, requests)


async def test_a_rate_limit_lets_its_whole_budget_go_then_refuses(store: Store) -> None:
    now = time.time()
    check = per_minute("rl-burst", 3)
    answers = [await store.rate_limit([check], now) for _ in range(4)]
    assert [a.allowed for a in answers] == [True, True, True, False]
    assert [a.states[0].remaining for a in answers] == [2, 1, 0, 0]
    assert answers[3].retry_after == pytest.approx(20.0)  # one request every 20 s
    assert answers[3].states[0].reset == pytest.approx(60.0)


async def test_a_rate_limit_refills_one_request_per_interval(store: Store) -> None:
    now = time.time()
    check = per_minute("rl-refill", 3)
    for _ in range(3):
        assert (await store.rate_limit([check], now)).allowed
    assert not (await store.rate_limit([check], now + 19.9)).allowed
    refilled = await store.rate_limit([check], now + 20.0)
    assert refilled.allowed and refilled.states[0].remaining == 0
    after_quiet = await store.rate_limit([check], now + 20.0 + 60.0)
    assert after_quiet.allowed and after_quiet.states[0].remaining == 2


async def test_a_refused_request_spends_no_budget(store: Store) -> None:
    now = time.time()
    check = per_minute("rl-unspent", 1)
    assert (await store.rate_limit([check], now)).allowed
    for second in range(1, 59):
        assert not (await store.rate_limit([check], now + second)).allowed
    assert (await store.rate_limit([check], now + 60.0)).allowed  # the refusals did not push it back


async def test_several_limits_spend_all_or_nothing(store: Store) -> None:
    now = time.time()
    narrow, wide = per_minute("rl-narrow", 1), per_minute("rl-wide", 10)
    assert (await store.rate_limit([wide, narrow], now)).allowed
    refused = await store.rate_limit([wide, narrow], now)
    assert not refused.allowed
    assert [s.remaining for s in refused.states] == [9, 0]  # the wide budget was not spent by the refusal
    alone = await store.rate_limit([wide], now)
    assert alone.allowed and alone.states[0].remaining == 8


async def test_rate_limit_keys_are_independent(store: Store) -> None:
    now = time.time()
    assert (await store.rate_limit([per_minute("rl-a", 1)], now)).allowed
    assert (await store.rate_limit([per_minute("rl-b", 1)], now)).allowed
    assert not (await store.rate_limit([per_minute("rl-a", 1)], now)).allowed


async def test_concurrent_rate_limit_checks_never_overspend(store: Store) -> None:
    now = time.time()
    check = per_minute("rl-race", 5)
    answers = await asyncio.gather(*(store.rate_limit([check], now) for _ in range(20)))
    assert sum(a.allowed for a in answers) == 5


# -- reservations: up to N units of one budget at once (GCRA for N requests) ---------


async def test_a_reservation_takes_up_to_the_units_asked_for_and_spends_them_from_the_budget(store: Store) -> None:
    now = time.time()
    check = per_minute("rl-reserve", 10)  # one every 6 s
    first = await store.reserve_rate(check, 4, now)
    assert (first.granted, first.remaining) == (4, 6)
    assert first.reset == pytest.approx(24.0) and first.retry_after == 0.0
    second = await store.reserve_rate(check, 8, now)
    assert (second.granted, second.remaining) == (6, 0)  # the largest number that still conforms
    refused = await store.reserve_rate(check, 4, now)
    assert refused.granted == 0 and refused.retry_after == pytest.approx(6.0)
    assert not (await store.rate_limit([check], now)).allowed  # exact checks see the reserved units spent


async def test_a_refused_reservation_writes_nothing_and_the_budget_refills_by_interval(store: Store) -> None:
    now = time.time()
    check = per_minute("rl-reserve-refill", 3)  # one every 20 s
    assert (await store.reserve_rate(check, 3, now)).granted == 3
    for second in (1, 10, 19):
        assert (await store.reserve_rate(check, 3, now + second)).granted == 0
    refilled = await store.reserve_rate(check, 3, now + 40.0)
    assert (refilled.granted, refilled.remaining) == (2, 0)


async def test_concurrent_reservations_never_grant_more_than_the_budget(store: Store) -> None:
    now = time.time()
    check = per_minute("rl-reserve-race", 25)
    grants = await asyncio.gather(*(store.reserve_rate(check, 4, now) for _ in range(10)))
    assert sum(g.granted for g in grants) == 25
    assert sorted(g.granted for g in grants) == [0, 0, 0, 1, 4, 4, 4, 4, 4, 4]
