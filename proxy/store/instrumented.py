"""Any store, timed: every call feeds ``labgate_store_operation_duration_seconds``.

A call that raises :class:`StoreUnavailable` is counted in
``labgate_store_errors_total{operation}`` and raised on unchanged: the caller
still fails closed.  Backends stay unaware of metrics.
"""

from __future__ import annotations

import time
from typing import Awaitable, Callable, TypeVar

from proxy.metrics import GatewayMetrics
from proxy.store.base import RevocationKind, Store, StoreUnavailable, TokenRecord

T = TypeVar("T")


class InstrumentedStore:
    """Implements :class:`proxy.store.base.Store` around ``inner``."""

    def __init__(self, inner: Store, metrics: GatewayMetrics) -> None:
        self.inner = inner
        self._metrics = metrics

    async def _timed(self, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        started = time.perf_counter()
        try:
            result = await call()
        except StoreUnavailable:
            self._metrics.store_operation(operation, time.perf_counter() - started, failed=True)
            raise
        self._metrics.store_operation(operation, time.perf_counter() - started)
        return result

    async def put_token(self, key: str, record: TokenRecord) -> None:
        await self._timed("put_token", lambda: self.inner.put_token(key, record))

    async def get_token(self, key: str, now: float) -> TokenRecord | None:
        return await self._timed("get_token", lambda: self.inner.get_token(key, now))

    async def drop_token(self, key: str) -> bool:
        return await self._timed("drop_token", lambda: self.inner.drop_token(key))

    async def touch(self, key: str, at: float, until: float | None = None) -> None:
        await self._timed("touch", lambda: self.inner.touch(key, at, until))

    async def last_used(self, key: str) -> float | None:
        return await self._timed("last_used", lambda: self.inner.last_used(key))

    async def revoke(self, kind: RevocationKind, value: str, at: float, until: float | None = None) -> None:
        await self._timed("revoke", lambda: self.inner.revoke(kind, value, at, until))

    async def revoked_at(self, kind: RevocationKind, value: str, now: float) -> float | None:
        return await self._timed("revoked_at", lambda: self.inner.revoked_at(kind, value, now))

    async def ping(self) -> None:
        await self._timed("ping", self.inner.ping)

    async def close(self) -> None:
        await self.inner.close()
