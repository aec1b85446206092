"""The store every conformance test runs against: each backend in turn, and the gateway's instrumented wrapper."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from proxy.metrics import GatewayMetrics
from proxy.store.base import Store
from proxy.store.instrumented import InstrumentedStore
from proxy.store.memory import MemoryStore
from proxy.store.redis import RedisStore
from proxy.store.sqlite import SqliteStore
from tests.redis_server import RedisServer


@pytest.fixture(params=["memory", "sqlite", "redis", "instrumented"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend: Store
    if request.param == "memory":
        backend = MemoryStore()
    elif request.param == "instrumented":
        backend = InstrumentedStore(MemoryStore(), GatewayMetrics())  # the wrapper the gateway uses, around any backend
    elif request.param == "sqlite":
        backend = SqliteStore(tmp_path / "labgate.db")
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        backend = RedisStore(server.url, prefix=f"test-{uuid.uuid4().hex}:")  # tests never see each other's keys
    yield backend
    await backend.close()
