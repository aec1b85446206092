"""Reading a token's recorded use back: uses are written in batches, once a second."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from proxy.store.sqlite import SqliteStore

BATCH_WAIT = 10.0  # seconds to wait for the batch (written every second) on a busy machine


async def use_written_since(path: Path, key: str, since: float) -> float | None:
    """The token's last use in the SQLite store once a batch wrote one at or after ``since``; None if none came."""
    store = SqliteStore(path)
    try:
        deadline = time.monotonic() + BATCH_WAIT
        while True:
            last = await store.last_used(key)
            if (last is not None and last >= since) or time.monotonic() > deadline:
                return last
            await asyncio.sleep(0.05)
    finally:
        await store.close()
