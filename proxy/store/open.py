"""The config's ``store`` section, and the store it opens."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from proxy.store.base import Store

StoreKind = Literal["sqlite", "redis", "memory"]
STORE_KINDS: tuple[StoreKind, ...] = ("sqlite", "redis", "memory")


@dataclass(frozen=True)
class StoreSettings:
    """``sqlite`` (default: ``labgate.db`` next to the config), ``redis`` or ``memory``.

    Redis is one primary by ``url``, or the primary that ``sentinels``
    (host, port) name for ``service_name``.  ``timeout`` bounds every store
    call (None: the backend's default); ``max_connections`` sizes the Redis
    pool of each process.
    """

    kind: StoreKind = "sqlite"
    path: Path | None = None
    url: str | None = None
    prefix: str = "labgate:"
    sentinels: tuple[tuple[str, int], ...] = ()
    service_name: str | None = None
    db: int = 0
    timeout: float | None = None
    max_connections: int | None = None


def open_store(settings: StoreSettings) -> Store:
    """A store object; connections open lazily, so an unreachable store is reported, not fatal."""
    if settings.kind == "memory":
        from proxy.store.memory import MemoryStore

        return MemoryStore()
    if settings.kind == "redis":
        from proxy.store.redis import (
            DEFAULT_MAX_CONNECTIONS,
            DEFAULT_TIMEOUT,
            RedisStore,
        )
        from proxy.store.redis_connect import RedisTarget

        target = RedisTarget(settings.url, settings.sentinels, settings.service_name, settings.db)
        return RedisStore(
            target,
            prefix=settings.prefix,
            timeout=settings.timeout or DEFAULT_TIMEOUT,
            max_connections=settings.max_connections or DEFAULT_MAX_CONNECTIONS,
        )
    from proxy.store.sqlite import SqliteStore
    from proxy.store.sqlite_connections import DEFAULT_TIMEOUT as SQLITE_TIMEOUT

    assert settings.path is not None
    return SqliteStore(settings.path, timeout=settings.timeout or SQLITE_TIMEOUT)
