"""Shared parts of the issuer tests: settings, grants, a clock the test moves, stores on every backend."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from proxy.issuer.access_tokens import AccessTokenGrant
from proxy.issuer.settings import IssuerSettings
from proxy.store.base import Store
from proxy.store.memory import MemoryStore
from proxy.store.redis import RedisStore
from proxy.store.sqlite import SqliteStore

ISSUER_URL = "https://labgate.test"
PASSPHRASE = b"correct horse battery staple"
PRIVATE_JWK_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")


def issuer_settings(**overrides: Any) -> IssuerSettings:
    values: dict[str, Any] = {"url": ISSUER_URL, "access_token_max_lifetime": 600.0, "key_refresh_interval": 5.0}
    values.update(overrides)
    return IssuerSettings(**values)


def grant(**overrides: Any) -> AccessTokenGrant:
    values: dict[str, Any] = {
        "subject": "alice", "client_id": "ops-cli", "token_type": "reader", "audience": "demo", "lifetime": 300.0,
    }
    values.update(overrides)
    return AccessTokenGrant(**values)


@dataclass
class Backend:
    """One kind of store; ``open`` gives a new client of the same data (another process, another replica)."""

    name: str
    open: Callable[[], Store]


def backend_for(name: str, tmp_path: Path, redis_url: str | None) -> Backend:
    if name == "memory":
        shared = MemoryStore()
        return Backend(name, lambda: shared)  # one process: every "client" is the same store
    if name == "sqlite":
        return Backend(name, lambda: SqliteStore(tmp_path / "labgate.db"))
    assert redis_url is not None
    prefix = f"issuer-{uuid.uuid4().hex}:"
    return Backend(name, lambda: RedisStore(redis_url, prefix=prefix))
