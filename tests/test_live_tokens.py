"""labgate_live_tokens: distinct tokens per upstream and type over the last 10 minutes, bounded."""

from __future__ import annotations

import hashlib

from prometheus_client import CollectorRegistry, Gauge

from proxy.live_tokens import LIVE_WINDOW_SECONDS, REFRESH_SECONDS, LiveTokens
from tests.clock import Clock


def fingerprint(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def tracker(clock: Clock, **kwargs: int) -> tuple[LiveTokens, CollectorRegistry]:
    registry = CollectorRegistry()
    gauge = Gauge("labgate_live_tokens", "test", ("upstream", "token_type"), registry=registry)
    return LiveTokens(gauge, clock=clock, **kwargs), registry


def live(registry: CollectorRegistry, upstream: str, token_type: str) -> float | None:
    return registry.get_sample_value("labgate_live_tokens", {"upstream": upstream, "token_type": token_type})


def test_each_token_counts_once_however_often_it_is_used() -> None:
    clock = Clock(1000.0)
    tokens, registry = tracker(clock)
    for _ in range(5):
        tokens.seen("svt", "emergency", fingerprint("a"))
        clock.now += 3
    tokens.seen("svt", "emergency", fingerprint("b"))
    tokens.seen("svt", "custom", fingerprint("c"))
    assert live(registry, "svt", "emergency") == 2
    assert live(registry, "svt", "custom") == 1
    assert len(tokens) == 3


def test_one_token_on_two_upstreams_counts_on_each() -> None:
    tokens, registry = tracker(Clock(1000.0))
    tokens.seen("svt", "reader", fingerprint("a"))
    tokens.seen("vcf", "reader", fingerprint("a"))
    assert live(registry, "svt", "reader") == 1
    assert live(registry, "vcf", "reader") == 1


def test_a_token_unused_for_ten_minutes_leaves_the_gauge() -> None:
    clock = Clock(1000.0)
    tokens, registry = tracker(clock)
    tokens.seen("svt", "reader", fingerprint("old"))
    clock.now += 300
    tokens.seen("svt", "reader", fingerprint("recent"))
    clock.now += LIVE_WINDOW_SECONDS - 300 - 1
    tokens.expire()
    assert live(registry, "svt", "reader") == 2
    clock.now += 2
    tokens.expire()
    assert live(registry, "svt", "reader") == 1
    clock.now += LIVE_WINDOW_SECONDS
    tokens.expire()
    assert live(registry, "svt", "reader") == 0


def test_a_token_in_use_stays_counted_past_the_window() -> None:
    clock = Clock(1000.0)
    tokens, registry = tracker(clock)
    for _ in range(4):  # used every 5 minutes for 20 minutes
        tokens.seen("svt", "reader", fingerprint("busy"))
        clock.now += 300
    tokens.expire()
    assert live(registry, "svt", "reader") == 1


def test_the_window_is_exact_to_within_the_refresh_interval() -> None:
    clock = Clock(1000.0)
    tokens, registry = tracker(clock)
    tokens.seen("svt", "reader", fingerprint("a"))
    clock.now += REFRESH_SECONDS / 2
    tokens.seen("svt", "reader", fingerprint("a"))  # not refreshed: seen within the interval
    clock.now += LIVE_WINDOW_SECONDS - REFRESH_SECONDS / 2
    tokens.expire()
    assert live(registry, "svt", "reader") == 0  # gone 10 minutes after the first of the two uses


def test_memory_is_bounded_and_the_gauge_follows_evictions() -> None:
    tokens, registry = tracker(Clock(1000.0), max_tokens=100)
    for n in range(250):
        tokens.seen("svt", "reader" if n % 2 else "custom", fingerprint(str(n)))
    assert len(tokens) == 100
    assert (live(registry, "svt", "reader") or 0) + (live(registry, "svt", "custom") or 0) == 100


def test_a_token_whose_type_changed_moves_between_series() -> None:
    clock = Clock(1000.0)
    tokens, registry = tracker(clock)
    tokens.seen("svt", "reader", fingerprint("a"))
    clock.now += REFRESH_SECONDS
    tokens.seen("svt", "admin", fingerprint("a"))  # e.g. after a config reload changed the matchers
    assert live(registry, "svt", "reader") == 0
    assert live(registry, "svt", "admin") == 1
