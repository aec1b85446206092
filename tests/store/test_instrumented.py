"""InstrumentedStore: every store call timed by operation, unreachable-store errors counted and raised."""

from __future__ import annotations

import inspect
import logging
import time

import pytest

from proxy.metrics import STORE_OPERATIONS, GatewayMetrics
from proxy.store.base import SigningKeyRecord, Store, StoreUnavailable, TokenRecord, TokenUse
from proxy.store.gcra import RateCheck
from proxy.store.instrumented import ERROR_LOG_INTERVAL, InstrumentedStore
from proxy.store.memory import MemoryStore
from proxy.store.redis import RedisStore
from tests.conftest import free_port


def count(metrics: GatewayMetrics, operation: str) -> float | None:
    return metrics.registry.get_sample_value("labgate_store_operation_duration_seconds_count", {"operation": operation})


def errors(metrics: GatewayMetrics, operation: str) -> float | None:
    return metrics.registry.get_sample_value("labgate_store_errors_total", {"operation": operation})


async def exercise(store: Store) -> None:
    """Every operation of the Store interface once."""
    now = time.time()
    await store.put_token("k", TokenRecord(token_type="emergency", issued_at=now, expires_at=now + 60))
    await store.get_token("k", now)
    await store.touch("k", now, until=now + 60)
    await store.touch_many([TokenUse("k", now + 1, now + 60)])
    await store.last_used("k")
    await store.revoke("subject", "alice", now, until=now + 60)
    await store.revoked_at("subject", "alice", now)
    await store.revocations([("subject", "alice"), ("token", "k")], now)
    await store.drop_token("k")
    key = SigningKeyRecord("kid", "ES256", now, "public", "private")
    await store.add_first_signing_key(key)
    await store.rotate_signing_key(SigningKeyRecord("kid2", "ES256", now + 1, "public", "private"), now + 60)
    await store.signing_keys(now)
    await store.put_record("subject", "alice", "{}", now + 60)
    await store.add_record("subject", "bob", "{}", now)
    await store.get_record("subject", "alice", now)
    await store.list_records("subject", now)
    await store.take_record("subject", "alice", now)
    await store.delete_record("subject", "alice")
    await store.ping()
    await store.rate_limit([RateCheck("rl", 1.0, 5)], now)


def test_every_store_operation_is_instrumented() -> None:
    """A method added to the Store interface must be added here too, or the gateway would lose it."""
    interface = {name for name, _ in inspect.getmembers(Store, inspect.isfunction) if not name.startswith("_")}
    # A reservation is timed as what it is, a rate-limit check handing out several units.
    assert interface - {"close", "local_rates", "reserve_rate"} == set(STORE_OPERATIONS)
    for name in interface - {"local_rates"}:
        assert inspect.iscoroutinefunction(getattr(InstrumentedStore, name)), name


async def test_in_process_budgets_are_the_inner_stores_own_and_not_a_store_operation() -> None:
    """Not a call to the store: the gateway spends them directly, so the wrapper hands out the inner store's."""
    metrics = GatewayMetrics()
    inner = MemoryStore()
    store = InstrumentedStore(inner, metrics)
    assert store.local_rates() is inner.local_rates() is not None
    assert not inspect.iscoroutinefunction(InstrumentedStore.local_rates)
    shared = InstrumentedStore(RedisStore(f"redis://127.0.0.1:{free_port()}/0"), metrics)
    assert shared.local_rates() is None  # Redis budgets are shared: every check is a timed round trip
    await shared.close()


async def test_each_operation_is_timed_against_the_memory_store() -> None:
    metrics = GatewayMetrics()
    store = InstrumentedStore(MemoryStore(), metrics)
    await exercise(store)
    await store.get_token("k", time.time())
    await store.close()
    for operation in STORE_OPERATIONS:
        assert count(metrics, operation) == (2 if operation == "get_token" else 1), operation
        assert errors(metrics, operation) == 0, operation


async def test_a_reservation_is_timed_as_a_rate_limit_operation() -> None:
    metrics = GatewayMetrics()
    store = InstrumentedStore(MemoryStore(), metrics)
    granted = await store.reserve_rate(RateCheck("rl", 1.0, 5), 3, time.time())
    assert granted.granted == 3
    assert count(metrics, "rate_limit") == 1


async def test_an_unreachable_store_is_counted_per_operation_and_still_raises() -> None:
    metrics = GatewayMetrics()
    closed_port = free_port()  # nothing listens here
    store = InstrumentedStore(RedisStore(f"redis://127.0.0.1:{closed_port}/0", timeout=1.0), metrics)
    try:
        with pytest.raises(StoreUnavailable):
            await store.revoked_at("token", "f" * 64, time.time())
        with pytest.raises(StoreUnavailable):
            await store.touch("k", time.time())
        with pytest.raises(StoreUnavailable):
            await store.ping()
    finally:
        await store.close()
    for operation in ("revoked_at", "touch", "ping"):
        assert errors(metrics, operation) == 1, operation
        assert count(metrics, operation) == 1, operation  # failed calls are timed too
    assert errors(metrics, "get_token") == 0


async def test_store_errors_are_logged_with_their_cause_at_most_once_an_interval(caplog: pytest.LogCaptureFixture) -> None:
    """A failing store is visible in the log, not only in a counter, and a burst of failures is one line."""
    moments = iter([100.0, 101.0, 102.0, 100.0 + ERROR_LOG_INTERVAL + 1])
    store = InstrumentedStore(
        RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=1.0), GatewayMetrics(), clock=lambda: next(moments)
    )
    try:
        with caplog.at_level(logging.WARNING, logger="labgate"):
            for _ in range(4):
                with pytest.raises(StoreUnavailable):
                    await store.revoked_at("token", "f" * 64, time.time())
    finally:
        await store.close()
    lines = [r.getMessage() for r in caplog.records if "store error" in r.getMessage()]
    assert len(lines) == 2
    assert "revoked_at" in lines[0] and "ConnectionError" in lines[0] and "127.0.0.1" in lines[0]
    assert "2 more store errors" in lines[1]
