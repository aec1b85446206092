"""``labgate serve`` as a real process, for tests that need one (memory, several replicas)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import yaml

from tests.redis_server import stop_process


@asynccontextmanager
async def labgate_serving(
    config: Path,
    *,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    log: Path | None = None,
    log_level: str = "warning",
) -> AsyncIterator[tuple[str, subprocess.Popen[bytes]]]:
    """Start labgate on ``config``, wait for /healthz (up to 10 s), stop it afterwards.

    ``env`` adds to (or replaces in) this process's environment; ``args`` go after ``serve``;
    ``log`` is a file that gets labgate's log (its stderr) at ``log_level``.
    """
    port = yaml.safe_load(config.read_text())["listen"]["port"]
    with contextlib.ExitStack() as files:
        stderr = files.enter_context(log.open("ab")) if log is not None else None
        process = subprocess.Popen(
            [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config), "--log-level", log_level, *args],
            # labgate serves only on aiohttp's C parser, whatever parser this test run uses.
            env={**{k: v for k, v in os.environ.items() if k != "AIOHTTP_NO_EXTENSIONS"}, **(env or {})},
            stderr=stderr,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        await wait_until_up(url, process)
        yield url, process
    finally:
        stop_process(process)


async def wait_until_up(url: str, process: subprocess.Popen[bytes]) -> None:
    """/healthz answers 200 within 10 s (each try on a fresh connection: with workers, any may answer)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
        for _ in range(100):
            assert process.poll() is None, "labgate exited"
            try:
                async with session.get(f"{url}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientConnectionError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"labgate at {url} did not come up")
