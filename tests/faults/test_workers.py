"""``labgate serve --workers 2``: a worker killed with SIGKILL under load."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import RecordingUpstream, write_config
from tests.faults.load import Answer, ask, fresh_token, summary
from tests.labgate_process import labgate_serving
from tests.test_workers import wait_for_workers

HOSTS = "/demo/api/hosts"
DYING = 0.2  # requests sent this soon after the SIGKILL may still have reached the dying worker


@pytest.mark.slow
async def test_a_worker_killed_under_load_costs_only_its_requests_in_flight(upstream: RecordingUpstream, tmp_path: Path) -> None:
    config = write_config(tmp_path, upstream.url, store={"type": "sqlite", "path": "labgate.db"}, decision_log="off")
    answers: list[Answer] = []
    stop = asyncio.Event()

    async def drive() -> None:
        # A connection per request: the kernel spreads them over both workers.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as client:
            for _ in range(3000):  # bounded: about 30 s at most
                if stop.is_set():
                    return
                answers.append(await ask(client, f"{url}{HOSTS}", fresh_token("session")))
                await asyncio.sleep(0.01)

    async with labgate_serving(config, args=("--workers", "2")) as (url, supervisor):
        first, second = await wait_for_workers(supervisor.pid, 2)
        drivers = [asyncio.create_task(drive()) for _ in range(4)]
        await asyncio.sleep(1)
        killed_at = time.monotonic()
        os.kill(first, signal.SIGKILL)
        replaced = await wait_for_workers(supervisor.pid, 2, not_in=(first,))
        replaced_at = time.monotonic()
        await asyncio.sleep(1)
        stop.set()
        await asyncio.gather(*drivers)
        assert second in replaced and supervisor.poll() is None
    later = [a for a in answers if a.sent_at > killed_at + DYING]
    assert later and summary(later) == {(200, None): len(later)}
    assert {a.status for a in answers} <= {200, 0}, summary(answers)  # a cut connection at worst, never a 5xx
    cut = [a for a in answers if a.status == 0]
    print(f"worker killed: {len(cut)} requests cut, replacement up {replaced_at - killed_at:.2f}s later, {summary(answers)}")
