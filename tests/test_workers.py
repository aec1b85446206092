"""``labgate serve --workers N``: several processes on one port, sharing token state through the store."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import aiohttp
from prometheus_client.mmap_dict import MmapedDict

from proxy.cli import main
from tests.conftest import RecordingUpstream, mint, write_config
from tests.labgate_process import labgate_serving, wait_until_up


def children_of(pid: int) -> list[int]:
    """The live child processes of ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return sorted(found)


async def wait_for_workers(pid: int, count: int, *, not_in: tuple[int, ...] = ()) -> list[int]:
    for _ in range(100):  # up to 10 s
        workers = [p for p in children_of(pid) if p not in not_in]
        if len(workers) == count:
            return workers
        await asyncio.sleep(0.1)
    raise AssertionError(f"expected {count} workers under {pid}, found {children_of(pid)}")


async def statuses(url: str, token: str, count: int) -> list[int]:
    """``count`` concurrent requests, each on a connection of its own, so the kernel spreads them."""

    async def one() -> int:
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            async with session.get(f"{url}/demo/api/hosts", headers={"Authorization": f"Bearer {token}"}) as response:
                await response.read()
                return response.status

    return list(await asyncio.gather(*(one() for _ in range(count))))


def requests_counted(counter_file: Path) -> float:
    """labgate_requests_total as one worker wrote it (prometheus_client's multiprocess file)."""
    try:
        values = MmapedDict.read_all_values_from_file(str(counter_file))
        return sum(value for key, value, *_ in values if '"labgate_requests_total"' in key)
    except (FileNotFoundError, struct.error):  # not written yet, or being created right now
        return 0.0


async def test_workers_share_the_port_the_metrics_and_every_revocation(tmp_path: Path, upstream: RecordingUpstream) -> None:
    config = write_config(tmp_path, upstream.url, decision_log="off")
    token = mint({"role": "reader", "sub": "carol"})
    async with labgate_serving(config, args=("--workers", "2")) as (url, supervisor):
        workers = await wait_for_workers(supervisor.pid, 2)
        await wait_until_up(url, supervisor)
        # Both workers serve: each counts its requests in its own file of the shared metrics directory.
        metrics_dir = dict(
            line.split("=", 1) for line in Path(f"/proc/{workers[0]}/environ").read_text().split("\0") if "=" in line
        )["PROMETHEUS_MULTIPROC_DIR"]
        sent = 0
        for _ in range(30):  # a worker that just started may not listen yet: a few more rounds then
            assert await statuses(url, token, 20) == [200] * 20
            sent += 20
            if all(requests_counted(Path(metrics_dir) / f"counter_{pid}.db") for pid in workers):
                break
        else:
            raise AssertionError("one worker never served a request")
        # Any worker's /metrics counts every worker's requests.
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{url}/metrics") as response:
                metrics = await response.text()
        assert f'labgate_requests_total{{decision="allow",reason="allowed",token_type="reader",upstream="demo"}} {sent}.0' in metrics

        # A revocation written once is enforced by every worker within a second.
        assert await asyncio.to_thread(main, ["revoke", "--config", str(config), "--subject", "carol"]) == 0
        await asyncio.sleep(1.0)
        assert await statuses(url, token, 20) == [401] * 20


async def test_a_dead_worker_is_replaced_and_sigterm_stops_them_all(tmp_path: Path, upstream: RecordingUpstream) -> None:
    config = write_config(tmp_path, upstream.url, decision_log="off")
    token = mint({"role": "reader"})
    async with labgate_serving(config, args=("--workers", "2")) as (url, supervisor):
        first, second = await wait_for_workers(supervisor.pid, 2)
        os.kill(first, signal.SIGKILL)
        replaced = await wait_for_workers(supervisor.pid, 2, not_in=(first,))
        assert second in replaced and first not in replaced
        await wait_until_up(url, supervisor)
        assert await statuses(url, token, 10) == [200] * 10
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(timeout=30) == 0
        assert children_of(supervisor.pid) == []


def run_serve(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "AIOHTTP_NO_EXTENSIONS"}
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config), *args],
        capture_output=True, text=True, timeout=30, env=env,
    )


def test_workers_refuse_a_memory_store(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9", store={"type": "memory"})
    done = run_serve(config, "--workers", "2")
    assert done.returncode == 2
    assert "--workers needs a shared store" in done.stderr and "sqlite or redis" in done.stderr


def test_workers_refuse_a_busy_port_at_once(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        config = write_config(tmp_path, "http://127.0.0.1:9", listen={"address": "127.0.0.1", "port": port})
        started = time.monotonic()
        done = run_serve(config, "--workers", "2")
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert time.monotonic() - started < 20


def test_zero_workers_is_a_usage_error(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    done = run_serve(config, "--workers", "0")
    assert done.returncode == 2 and "--workers must be at least 1" in done.stderr
