"""Graceful shutdown of a real ``labgate serve``: stop accepting, drain up to the deadline, cut the rest."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import time
from pathlib import Path

import aiohttp
import pytest
import yaml

from tests.conftest import mint, write_config
from tests.gateway.serving import GatedUpstream, get
from tests.labgate_process import labgate_serving

SLOW_APPLIANCE = {"timeouts": {"connect": 2, "read": 60}}  # labgate waits for the appliance, not the other way round


async def refuses_connections(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


async def exit_code(process: subprocess.Popen[bytes], *, attempts: int = 300) -> int:
    """The exit code, polled 50 ms apart (the appliance runs on this event loop, so never block it)."""
    for _ in range(attempts):
        code = process.poll()
        if code is not None:
            return code
        await asyncio.sleep(0.05)
    raise AssertionError("labgate did not exit in time")


def port_of(config: Path) -> int:
    return int(yaml.safe_load(config.read_text())["listen"]["port"])


async def test_sigterm_stops_accepting_and_lets_a_request_in_flight_finish(tmp_path: Path) -> None:
    async with GatedUpstream() as appliance:
        config = write_config(tmp_path, appliance.url, upstream=SLOW_APPLIANCE, shutdown={"drain_seconds": 30})
        async with labgate_serving(config) as (url, process):
            slow = asyncio.create_task(get(f"{url}/demo/api/slow", mint()))
            await asyncio.wait_for(appliance.arrived.wait(), 5)
            process.send_signal(signal.SIGTERM)
            for _ in range(100):
                if await refuses_connections(port_of(config)):
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("labgate still accepts connections after SIGTERM")
            assert process.poll() is None  # still draining
            appliance.release.set()
            assert await asyncio.wait_for(slow, 10) == (200, {"path": "/api/slow"})
            assert await exit_code(process) == 0
    assert appliance.paths == ["/api/slow"]


async def test_sigterm_cuts_a_request_longer_than_the_drain_deadline(tmp_path: Path) -> None:
    async with GatedUpstream() as appliance:
        config = write_config(tmp_path, appliance.url, upstream=SLOW_APPLIANCE, shutdown={"drain_seconds": 0.5})
        async with labgate_serving(config) as (url, process):
            slow = asyncio.create_task(get(f"{url}/demo/api/slow", mint()))
            await asyncio.wait_for(appliance.arrived.wait(), 5)
            process.send_signal(signal.SIGTERM)
            with pytest.raises(aiohttp.ClientError):  # cut: the connection closes without an answer
                await asyncio.wait_for(slow, 10)
            assert await exit_code(process) == 0  # within the 15 s exit_code polls, not after 60 s of read timeout


async def test_sigterm_with_nothing_in_flight_exits_at_once(tmp_path: Path) -> None:
    async with GatedUpstream() as appliance:
        config = write_config(tmp_path, appliance.url, shutdown={"drain_seconds": 3600})
        async with labgate_serving(config) as (url, process):
            assert (await get(f"{url}/demo/api/hosts", mint()))[0] == 200
            process.send_signal(signal.SIGTERM)
            assert await exit_code(process) == 0  # the hour-long deadline is never waited for


async def test_a_request_cut_at_the_drain_deadline_is_logged_and_the_process_exits_within_a_second(tmp_path: Path) -> None:
    log, token = tmp_path / "labgate.log", mint()
    async with GatedUpstream() as appliance:
        config = write_config(tmp_path, appliance.url, upstream=SLOW_APPLIANCE, shutdown={"drain_seconds": 1})
        async with labgate_serving(config, log=log, log_level="info") as (url, process):
            slow = asyncio.create_task(get_with_id(f"{url}/demo/api/slow", token, "cut-me"))
            await asyncio.wait_for(appliance.arrived.wait(), 5)
            sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            assert await exit_code(process) == 0
            took = time.monotonic() - sent
            with pytest.raises(aiohttp.ClientError):
                await asyncio.wait_for(slow, 10)
    assert took <= 1 + 1, f"exited {took:.2f}s after SIGTERM with drain_seconds: 1"
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    (cut,) = [line for line in lines if line.get("reason") == "shutdown_cut"]
    assert (cut["request_id"], cut["method"], cut["path"], cut["decision"], cut["status"]) == (
        "cut-me", "GET", "/demo/api/slow", "deny", 503
    )
    assert token not in log.read_text()


async def get_with_id(url: str, token: str, request_id: str) -> int:
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": f"Bearer {token}", "X-Request-ID": request_id}
        async with session.get(url, headers=headers) as response:
            return response.status
