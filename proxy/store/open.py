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
    """``sqlite`` (default: ``labgate.db`` next to the config), ``redis`` (url, key prefix) or ``memory``."""

    kind: StoreKind = "sqlite"
    path: Path | None = None
    url: str | None = None
    prefix: str = "labgate:"


def open_store(settings: StoreSettings) -> Store:
    """A store object; connections open lazily, so an unreachable store is reported, not fatal."""
    if settings.kind == "memory":
        from proxy.store.memory import MemoryStore

        return MemoryStore()
    if settings.kind == "redis":
        from proxy.store.redis import RedisStore

        assert settings.url is not None
        return RedisStore(settings.url, prefix=settings.prefix)
    from proxy.store.sqlite import SqliteStore

    assert settings.path is not None
    return SqliteStore(settings.path)
