"""The SQLite store beside another writer: reads go on, writes fail closed within the timeout."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from proxy.store.base import StoreUnavailable
from proxy.store.sqlite import SqliteStore

TIMEOUT = 0.5
MARGIN = 1.0  # what a loaded two-core machine may add to a timeout


async def test_reads_go_on_and_writes_fail_closed_while_another_connection_holds_the_write_lock(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "labgate.db", timeout=TIMEOUT)
    other = None
    try:
        now = time.time()
        await store.revoke("subject", "mallory", now)
        other = sqlite3.connect(tmp_path / "labgate.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process's write transaction, as `labgate token` holds one
        started = time.monotonic()
        writes = [store.touch(f"k{n}", now) for n in range(8)]  # queued one behind the other on the writer
        reads = [store.revoked_at("subject", "mallory", now) for _ in range(8)]
        results = await asyncio.gather(*writes, *reads, return_exceptions=True)
        took = time.monotonic() - started
        assert all(isinstance(r, StoreUnavailable) for r in results[:8]), results[:8]
        assert results[8:] == [now] * 8
        assert took <= TIMEOUT + MARGIN  # a queue of writes is not a queue of busy timeouts
        other.execute("ROLLBACK")
        await store.touch("k", now)
        assert await store.last_used("k") == now
    finally:
        if other is not None:
            other.close()
        await store.close()


async def test_a_read_is_not_held_up_by_a_slow_write_of_this_process(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "labgate.db", timeout=5)
    try:
        await store.put_record("subject", "alice", "kept")
        other = sqlite3.connect(tmp_path / "labgate.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        write = asyncio.create_task(store.put_record("subject", "bob", "waits for the lock"))
        await asyncio.sleep(0.2)  # the write is waiting on the file's lock now
        assert await asyncio.wait_for(store.get_record("subject", "alice", time.time()), MARGIN) == "kept"
        assert not write.done()
        other.execute("ROLLBACK")
        other.close()
        await write
        assert await store.get_record("subject", "bob", time.time()) == "waits for the lock"
    finally:
        await store.close()


async def test_a_closed_store_opens_again_on_its_next_call(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "labgate.db")
    await store.put_record("subject", "alice", "kept")
    await store.close()
    assert await store.get_record("subject", "alice", time.time()) == "kept"
    await store.close()


@pytest.mark.parametrize("readers", [1, 4])
async def test_many_reads_at_once_all_answer(tmp_path: Path, readers: int) -> None:
    store = SqliteStore(tmp_path / "labgate.db", readers=readers)
    try:
        await store.revoke("token", "t", 1.0)
        assert await asyncio.gather(*(store.revoked_at("token", "t", 2.0) for _ in range(50))) == [1.0] * 50
    finally:
        await store.close()


async def test_closing_stops_a_write_waiting_for_another_process_lock(tmp_path: Path) -> None:
    """Shutdown must not wait out a busy timeout: the process exits within a second of its drain."""
    store = SqliteStore(tmp_path / "labgate.db", timeout=30)
    await store.put_record("subject", "alice", "kept")
    other = sqlite3.connect(tmp_path / "labgate.db", isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        write = asyncio.create_task(store.put_record("subject", "bob", "never"))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await store.close()
        assert time.monotonic() - started <= MARGIN
        with pytest.raises(StoreUnavailable):
            await write
    finally:
        other.close()
