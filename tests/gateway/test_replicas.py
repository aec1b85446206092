"""Two labgate processes on one Redis: a revocation made once is enforced by both, by its notice.

Each replica keeps a local view of revocations kept current by Redis pub/sub
and trusts it only while its heartbeat comes back within ``FRESH_BOUND``
(0.25 s); with the channel down it asks Redis.  So a revocation is enforced
everywhere within that bound, whatever happens to the channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import redis.asyncio as aioredis
import yaml

from proxy.cli import main
from proxy.store.redis import RedisStore
from proxy.store.redis_notices import FRESH_BOUND
from tests.conftest import RecordingUpstream, free_port, mint, write_config
from tests.labgate_process import labgate_serving
from tests.redis_server import RedisServer


@pytest.fixture
async def two_replicas(
    upstream: RecordingUpstream, redis_server: RedisServer, tmp_path: Path
) -> AsyncIterator[tuple[Path, list[str]]]:
    config = write_config(tmp_path, upstream.url, store={"type": "redis", "url": redis_server.url, "prefix": f"replicas-{uuid.uuid4().hex}:"})
    async with contextlib.AsyncExitStack() as stack:
        urls = []
        for index in range(2):
            document = yaml.safe_load(config.read_text())
            document["listen"]["port"] = free_port()
            replica_config = tmp_path / f"replica{index}.yaml"
            replica_config.write_text(yaml.safe_dump(document))
            url, _ = await stack.enter_async_context(labgate_serving(replica_config))
            urls.append(url)
        yield config, urls


async def statuses(urls: list[str], token: str) -> list[int]:
    async with aiohttp.ClientSession() as session:
        found = []
        for url in urls:
            async with session.get(f"{url}/demo/api/hosts", headers={"Authorization": f"Bearer {token}"}) as response:
                found.append(response.status)
        return found


@pytest.mark.parametrize("what", ["--subject", "--token"])
async def test_a_revocation_through_one_replica_is_enforced_by_all_within_a_second(
    two_replicas: tuple[Path, list[str]], what: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config, urls = two_replicas
    token = mint({"sub": "alice", "iat": int(time.time()) - 5})
    bystander = mint({"sub": "bob"})
    assert await statuses(urls, token) == [200, 200]
    revoke = ["revoke", "--config", str(config), what, "alice" if what == "--subject" else token]
    assert await asyncio.to_thread(main, revoke) == 0  # the CLI runs its own event loop
    assert "revoked" in capsys.readouterr().out
    revoked_at = time.monotonic()
    while await statuses(urls, token) != [401, 401]:
        assert time.monotonic() - revoked_at < 1.0, "a replica still accepts the revoked token after 1 s"
        await asyncio.sleep(0.05)
    assert await statuses(urls, bystander) == [200, 200]  # nobody else is affected


async def test_with_every_notice_channel_killed_a_revocation_is_never_served_late(
    two_replicas: tuple[Path, list[str]], redis_server: RedisServer
) -> None:
    """CLIENT KILL TYPE pubsub drops both replicas' subscriptions: the revocation's notice reaches nobody."""
    config, urls = two_replicas
    store_settings = yaml.safe_load(config.read_text())["store"]
    token = mint({"sub": "dave", "iat": int(time.time()) - 5})
    assert await statuses(urls, token) == [200, 200]
    admin, store = aioredis.Redis.from_url(redis_server.url), RedisStore(redis_server.url, prefix=store_settings["prefix"])
    try:
        assert await admin.client_kill_filter(_type="pubsub") >= 2
        await store.revoke("subject", "dave", time.time())
    finally:
        await admin.aclose()
        await store.close()
    written = time.monotonic()
    while True:  # a 200 only from a request sent within the bound of the write
        sent = time.monotonic()
        found = await statuses(urls, token)
        if found == [401, 401]:
            break
        assert set(found) <= {200, 401} and sent - written <= FRESH_BOUND, found
        await asyncio.sleep(0.01)
    assert await statuses(urls, mint({"sub": "erin"})) == [200, 200]


def test_revoke_without_a_reachable_store_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9", store={"type": "redis", "url": "redis://127.0.0.1:9/0"})
    assert main(["revoke", "--config", str(config), "--subject", "alice"]) == 1
    assert "revocation not written" in capsys.readouterr().err


def test_revoke_with_an_unreadable_token_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    assert main(["revoke", "--config", str(config), "--token-file", str(tmp_path / "missing")]) == 2
    assert "cannot read" in capsys.readouterr().err
