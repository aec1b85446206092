"""A store backend fixture for the issuer tests: every test of it runs on memory, sqlite and a real Redis."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.issuer.issuing import Backend, backend_for
from tests.redis_server import RedisServer


@pytest.fixture(params=["memory", "sqlite", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    redis_url = None
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        redis_url = server.url
    return backend_for(request.param, tmp_path, redis_url)
