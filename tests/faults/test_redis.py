"""The Redis store under faults, seen from outside: a real labgate process, a real redis-server.

What must hold whatever Redis does: no answer 200 for a token whose state could
not be checked, no 500, every answer within the store timeout, and service
back without restarting labgate once Redis is back.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from proxy.store.redis import RedisStore
from tests.conftest import RecordingUpstream, mint, write_config
from tests.faults.load import Answer, ask, fresh_token, session, summary
from tests.faults.nodes import RedisNode
from tests.labgate_process import labgate_serving

STORE_TIMEOUT = 1.0
MARGIN = 1.0  # what a loaded two-core machine may add to a store timeout before an answer is sent
HOSTS = "/demo/api/hosts"


@pytest.fixture
async def redis_node(tmp_path: Path) -> AsyncIterator[RedisNode]:
    node = RedisNode(tmp_path / "redis", durable=True)
    node.start()
    yield node
    node.stop()


def redis_config(tmp_path: Path, upstream: RecordingUpstream, url: str, **store: object) -> Path:
    return write_config(
        tmp_path, upstream.url, store={"type": "redis", "url": url, "timeout": STORE_TIMEOUT, **store}, decision_log="denials"
    )


async def revoke_subject(url: str, subject: str) -> None:
    store = RedisStore(url)  # labgate's default prefix: the keys labgate reads
    try:
        await store.revoke("subject", subject, time.time(), None)
    finally:
        await store.close()


async def first_success(url: str, *, after: float, seconds: float) -> float:
    """The monotonic time of the first 200 for a fresh token sent after ``after``; bounded by ``seconds``."""
    async with session() as client:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            answer = await ask(client, f"{url}{HOSTS}", fresh_token())
            if answer.status == 200 and answer.sent_at >= after:
                return answer.sent_at + answer.seconds
            await asyncio.sleep(0.05)
    raise AssertionError(f"no 200 within {seconds}s")


@pytest.mark.slow
async def test_a_burst_of_2000_requests_with_distinct_tokens_gets_no_503(
    upstream: RecordingUpstream, redis_node: RedisNode, tmp_path: Path
) -> None:
    """Each request needs the store (revocations, last use, recording the use): the pool queues them."""
    tokens = [fresh_token("session") for _ in range(2000)]
    log = tmp_path / "labgate.log"
    config = redis_config(tmp_path, upstream, redis_node.url, timeout=2)
    # The appliance's connection pool (256) makes the rest wait for a free connection up to the connect
    # timeout: long enough here that what is measured is the store.
    document = yaml.safe_load(config.read_text())
    document["upstreams"][0]["timeouts"]["connect"] = 30
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    async with labgate_serving(config, log=log) as (url, _):
        async with session(limit=500) as client:
            burst = asyncio.gather(*(ask(client, f"{url}{HOSTS}", token) for token in tokens))
            readiness = []
            while not burst.done() and len(readiness) < 600:  # /readyz every 50 ms while the burst lasts
                readiness.append(await ask(client, f"{url}/readyz", None))
                await asyncio.sleep(0.05)
            answers = await burst
    assert summary(answers) == {(200, None): 2000}, log.read_text()[-3000:]
    assert {answer.status for answer in readiness} <= {200}, summary(readiness)
    print(f"burst: {summary(answers)}, slowest {max(a.seconds for a in answers):.2f}s, readyz {summary(readiness)}")


@pytest.mark.slow
async def test_redis_killed_and_restarted_under_load(upstream: RecordingUpstream, redis_node: RedisNode, tmp_path: Path) -> None:
    await revoke_subject(redis_node.url, "mallory")
    revoked = mint({"sub": "mallory", "iat": int(time.time()) - 10})
    answers: list[Answer] = []
    stop = asyncio.Event()

    async def drive(label: str) -> None:
        async with session() as client:
            for _ in range(2000):  # bounded: about 20 s at most
                if stop.is_set():
                    return
                token = revoked if label == "revoked" else fresh_token(label)
                answers.append(await ask(client, f"{url}{HOSTS}", token, label=label))
                await asyncio.sleep(0.01)

    async with labgate_serving(redis_config(tmp_path, upstream, redis_node.url)) as (url, process):
        drivers = [asyncio.create_task(drive(label)) for label in ("reader", "session", "session", "revoked")]
        await asyncio.sleep(1)
        killed_at = time.monotonic()
        redis_node.kill()
        await asyncio.sleep(2)
        redis_node.start()  # same port, same append-only file: the revocation is still there
        restarted_at = time.monotonic()
        recovered_at = await first_success(url, after=restarted_at, seconds=10)
        await asyncio.sleep(1)
        stop.set()
        await asyncio.gather(*drivers)
        assert process.poll() is None  # never restarted
    outage = [
        a for a in answers if killed_at + 0.05 < a.sent_at and a.sent_at + a.seconds < restarted_at and a.label != "revoked"
    ]
    after = [a for a in answers if a.sent_at > recovered_at and a.label != "revoked"]
    assert outage and all((a.status, a.reason) == (503, "store_unavailable") for a in outage), summary(outage)
    assert all(a.status != 200 for a in answers if a.label == "revoked"), summary([a for a in answers if a.label == "revoked"])
    assert not [a for a in answers if a.status >= 500 and a.status != 503], summary(answers)
    assert after and all(a.status == 200 for a in after), summary(after)
    print(f"redis restart: back {recovered_at - restarted_at:.2f}s after redis listened again; outage {summary(outage)}")


async def test_a_frozen_redis_is_answered_within_the_store_timeout(
    upstream: RecordingUpstream, redis_node: RedisNode, tmp_path: Path
) -> None:
    async with labgate_serving(redis_config(tmp_path, upstream, redis_node.url)) as (url, process):
        async with session() as client:
            assert (await ask(client, f"{url}{HOSTS}", fresh_token("session"))).status == 200  # connections open
            redis_node.freeze()
            try:
                frozen = await asyncio.gather(
                    *(ask(client, f"{url}{HOSTS}", fresh_token(role)) for role in ("reader", "session") * 10),
                    ask(client, f"{url}/readyz", None),
                )
            finally:
                thawed_at = time.monotonic()
                redis_node.thaw()
        recovered_at = await first_success(url, after=thawed_at, seconds=10)
        assert process.poll() is None
    assert summary(frozen) == {(503, "store_unavailable"): 20, (503, None): 1}
    assert max(a.seconds for a in frozen) <= STORE_TIMEOUT + MARGIN, [round(a.seconds, 2) for a in frozen]
    print(f"frozen redis: slowest answer {max(a.seconds for a in frozen):.2f}s, back {recovered_at - thawed_at:.2f}s after thaw")
