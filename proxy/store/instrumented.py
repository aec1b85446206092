"""Any store, timed: every call feeds ``labgate_store_operation_duration_seconds``.

A call that raises :class:`StoreUnavailable` is counted in
``labgate_store_errors_total{operation}``, logged with its cause (at most one
line every ``ERROR_LOG_INTERVAL`` seconds, saying how many failed since) and
raised on unchanged: the caller still fails closed.  Backends stay unaware of
metrics.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, TypeVar

from proxy.metrics import STORE_OPERATIONS, GatewayMetrics
from proxy.store.base import (
    RevocationFeed,
    RevocationKind,
    SigningKeyRecord,
    Store,
    StoreUnavailable,
    TokenRecord,
    TokenUse,
)
from proxy.store.gcra import LocalRates, RateCheck, RateGrant, RateVerdict

T = TypeVar("T")
logger = logging.getLogger("labgate")
ERROR_LOG_INTERVAL = 10.0  # seconds between two log lines about store errors


class _Operation:
    """One operation's histogram and error children, resolved once: calls can be per request."""

    __slots__ = ("duration", "errors")

    def __init__(self, metrics: GatewayMetrics, name: str) -> None:
        self.duration = metrics.store_duration.labels(name)
        self.errors = metrics.store_errors.labels(name)


class _ErrorLog:
    """One log line per interval at most: an outage under load must not flood the log."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._quiet_until = float("-inf")
        self._unreported = 0

    def failed(self, operation: str, error: StoreUnavailable) -> None:
        now = self._clock()
        if now < self._quiet_until:
            self._unreported += 1
            return
        since = f" ({self._unreported} more store errors since the last line)" if self._unreported else ""
        logger.warning("store error in %s: %s%s", operation, error, since)
        self._quiet_until, self._unreported = now + ERROR_LOG_INTERVAL, 0


class InstrumentedStore:
    """Implements :class:`proxy.store.base.Store` around ``inner``."""

    def __init__(self, inner: Store, metrics: GatewayMetrics, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.inner = inner
        self.revocation_feed: RevocationFeed | None = inner.revocation_feed
        if self.revocation_feed is not None:
            live = metrics.revocation_notices_live.labels("redis")  # the one store with a notice channel
            self.revocation_feed.watch(lambda fresh: live.set(1 if fresh else 0))
        self._ops = {name: _Operation(metrics, name) for name in STORE_OPERATIONS}
        self._errors = _ErrorLog(clock)

    async def _timed(self, operation: str, call: Coroutine[Any, Any, T]) -> T:
        metric = self._ops[operation]
        started = time.perf_counter()
        try:
            return await call
        except StoreUnavailable as exc:
            metric.errors.inc()
            self._errors.failed(operation, exc)
            raise
        finally:
            metric.duration.observe(time.perf_counter() - started)

    async def put_token(self, key: str, record: TokenRecord) -> None:
        await self._timed("put_token", self.inner.put_token(key, record))

    async def get_token(self, key: str, now: float) -> TokenRecord | None:
        return await self._timed("get_token", self.inner.get_token(key, now))

    async def drop_token(self, key: str) -> bool:
        return await self._timed("drop_token", self.inner.drop_token(key))

    async def touch(self, key: str, at: float, until: float | None = None) -> None:
        await self._timed("touch", self.inner.touch(key, at, until))

    async def touch_many(self, uses: Sequence[TokenUse]) -> None:
        await self._timed("touch_many", self.inner.touch_many(uses))

    async def last_used(self, key: str) -> float | None:
        return await self._timed("last_used", self.inner.last_used(key))

    async def revoke(self, kind: RevocationKind, value: str, at: float, until: float | None = None) -> None:
        await self._timed("revoke", self.inner.revoke(kind, value, at, until))

    async def revoked_at(self, kind: RevocationKind, value: str, now: float) -> float | None:
        return await self._timed("revoked_at", self.inner.revoked_at(kind, value, now))

    async def revocations(self, items: Sequence[tuple[RevocationKind, str]], now: float) -> list[float | None]:
        return await self._timed("revocations", self.inner.revocations(items, now))

    async def signing_keys(self, now: float) -> list[SigningKeyRecord]:
        return await self._timed("signing_keys", self.inner.signing_keys(now))

    async def add_first_signing_key(self, key: SigningKeyRecord) -> bool:
        return await self._timed("add_first_signing_key", self.inner.add_first_signing_key(key))

    async def rotate_signing_key(self, key: SigningKeyRecord, usable_until: float) -> None:
        await self._timed("rotate_signing_key", self.inner.rotate_signing_key(key, usable_until))

    async def put_record(self, kind: str, key: str, value: str, expires_at: float | None = None) -> None:
        await self._timed("put_record", self.inner.put_record(kind, key, value, expires_at))

    async def add_record(self, kind: str, key: str, value: str, now: float, expires_at: float | None = None) -> bool:
        return await self._timed("add_record", self.inner.add_record(kind, key, value, now, expires_at))

    async def get_record(self, kind: str, key: str, now: float) -> str | None:
        return await self._timed("get_record", self.inner.get_record(kind, key, now))

    async def list_records(self, kind: str, now: float) -> list[tuple[str, str]]:
        return await self._timed("list_records", self.inner.list_records(kind, now))

    async def delete_record(self, kind: str, key: str) -> bool:
        return await self._timed("delete_record", self.inner.delete_record(kind, key))

    async def take_record(self, kind: str, key: str, now: float) -> str | None:
        return await self._timed("take_record", self.inner.take_record(kind, key, now))

    async def rate_limit(self, checks: Sequence[RateCheck], now: float) -> RateVerdict:
        return await self._timed("rate_limit", self.inner.rate_limit(checks, now))

    async def reserve_rate(self, check: RateCheck, most: int, now: float) -> RateGrant:
        """Timed as a ``rate_limit`` operation: a reservation is a rate-limit check that hands out several units."""
        return await self._timed("rate_limit", self.inner.reserve_rate(check, most, now))

    def local_rates(self) -> LocalRates | None:
        """The inner store's in-process budgets: a dictionary update, not timed as a store operation."""
        return self.inner.local_rates()

    async def ping(self) -> None:
        await self._timed("ping", self.inner.ping())

    async def close(self) -> None:
        await self.inner.close()
