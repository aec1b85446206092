"""A 1 GiB upload and a 1 GiB download pass through a real labgate process in bounded memory.

labgate runs as its own process (``python -m proxy.cli serve``) so its peak
resident memory (``VmHWM``) measures labgate alone, not the test's client and
upstream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest

from tests.conftest import RecordingUpstream, mint, write_config
from tests.labgate_process import labgate_serving

GIB = 1024**3
# Peak RSS allowed for the labgate process; it idles near 60 MiB.  Buffering
# either body would take it past 1 GiB.
MEMORY_CEILING = 200 * 1024**2


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("VmHWM not found")


@pytest.fixture
async def labgate_process(upstream: RecordingUpstream, tmp_path: Path) -> AsyncIterator[tuple[str, int]]:
    async with labgate_serving(write_config(tmp_path, upstream.url)) as (url, process):
        yield url, process.pid


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read peak memory")
async def test_one_gib_upload_and_download_stream_in_bounded_memory(
    upstream: RecordingUpstream, labgate_process: tuple[str, int]
) -> None:
    url, pid = labgate_process
    block = b"u" * (1 << 20)

    async def one_gib() -> AsyncIterator[bytes]:
        for _ in range(GIB // len(block)):
            yield block

    timeout = aiohttp.ClientTimeout(total=300)
    headers = {"Authorization": f"Bearer {mint(lifetime=600)}"}
    async with aiohttp.ClientSession(timeout=timeout) as session:
        async with session.put(f"{url}/demo/api/upload", data=one_gib(), headers=headers) as response:
            assert response.status == 200
            assert (await response.json())["received_bytes"] == GIB

        upstream.download_size = GIB
        received = 0
        async with session.get(f"{url}/demo/api/download", headers=headers) as response:
            assert response.status == 200
            async for chunk in response.content.iter_chunked(1 << 20):
                received += len(chunk)
        assert received == GIB

    assert upstream.received[0].body_size == GIB
    assert peak_rss(pid) < MEMORY_CEILING, f"labgate peaked at {peak_rss(pid) / 1024**2:.0f} MiB"
