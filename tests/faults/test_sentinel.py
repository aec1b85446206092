"""Redis Sentinel: labgate follows a failover to the new primary without restarting."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from proxy.store.redis import RedisStore
from proxy.store.redis_connect import RedisTarget
from tests.conftest import RecordingUpstream, mint, write_config
from tests.faults.load import Answer, ask, fresh_token, session, summary
from tests.faults.nodes import RedisNode, SentinelNode
from tests.labgate_process import labgate_serving

SERVICE = "labgate"
HOSTS = "/demo/api/hosts"


@pytest.fixture
async def sentinel_setup(tmp_path: Path) -> AsyncIterator[tuple[RedisNode, RedisNode, SentinelNode]]:
    primary = RedisNode(tmp_path / "primary")
    primary.start()
    replica = RedisNode(tmp_path / "replica", replica_of=primary.port)
    replica.start()
    sentinel = SentinelNode(tmp_path / "sentinel", SERVICE, primary)
    sentinel.start()
    try:
        yield primary, replica, sentinel
    finally:
        sentinel.stop()
        replica.stop()
        primary.stop()


async def replicated(primary: RedisNode) -> None:
    """Every write so far has reached the replica (WAIT), so a failover loses none of them."""
    client = aioredis.Redis.from_url(primary.url)
    try:
        for _ in range(100):  # the replica may still be syncing: up to 10 s
            if await client.execute_command("WAIT", 1, 100) >= 1:
                return
            await asyncio.sleep(0.1)
        raise AssertionError("the replica never caught up")
    finally:
        await client.aclose()


async def revoke_through_sentinel(sentinel: SentinelNode, subject: str) -> None:
    store = RedisStore(RedisTarget(sentinels=(("127.0.0.1", sentinel.port),), service_name=SERVICE))
    try:
        await store.revoke("subject", subject, time.time(), None)
    finally:
        await store.close()


@pytest.mark.slow
async def test_labgate_follows_a_sentinel_failover(
    upstream: RecordingUpstream, sentinel_setup: tuple[RedisNode, RedisNode, SentinelNode], tmp_path: Path
) -> None:
    primary, replica, sentinel = sentinel_setup
    store = {"type": "redis", "sentinels": [f"127.0.0.1:{sentinel.port}"], "service_name": SERVICE, "timeout": 1}
    config = write_config(tmp_path, upstream.url, store=store, decision_log="denials")
    await revoke_through_sentinel(sentinel, "mallory")
    await replicated(primary)
    revoked = mint({"sub": "mallory", "iat": int(time.time()) - 10})
    answers: list[Answer] = []
    async with labgate_serving(config) as (url, process):
        async with session() as client:
            assert (await ask(client, f"{url}{HOSTS}", fresh_token("session"))).status == 200
            killed_at = time.monotonic()
            primary.kill()
            for _ in range(600):  # until a fresh token is served again: 30 s at most
                answer = await ask(client, f"{url}{HOSTS}", fresh_token("session"))
                answers.append(answer)
                if answer.status == 200:
                    break
                await asyncio.sleep(0.05)
            recovered_at = time.monotonic()
            assert answers[-1].status == 200, summary(answers)
            assert (await ask(client, f"{url}{HOSTS}", revoked)).reason == "revoked"  # replicated before the failover
            await revoke_through_sentinel(sentinel, "trudy")  # written to the new primary
            late = mint({"sub": "trudy", "iat": int(time.time()) - 10})
            assert (await ask(client, f"{url}{HOSTS}", late)).reason == "revoked"
            assert (await ask(client, f"{url}/readyz", None)).status == 200
        assert process.poll() is None
    assert {(a.status, a.reason) for a in answers[:-1]} <= {(503, "store_unavailable")}, summary(answers)
    print(f"sentinel failover: served again {recovered_at - killed_at:.2f}s after the primary was killed; {summary(answers)}")
