"""The SQLite store's file, connections and threads: one writer, a few readers, none shared.

Writes are serialised on one connection and one thread; reads run on a small
pool of reader connections, each owned by one thread.  The threads are the
store's own, so a store waiting on a lock never occupies the event loop or
the default thread pool the rest of labgate uses.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from proxy.store.base import StoreUnavailable

T = TypeVar("T")
DEFAULT_TIMEOUT = 5.0  # seconds a call may take, waiting for another process's write lock included
READERS = 4  # reader connections (and threads) per process
SCHEMA_VERSION = 1
WAL_SWITCH_TRIES = 100  # 20 ms apart: two seconds at most
SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (key TEXT PRIMARY KEY, record TEXT NOT NULL, expires_at REAL);
CREATE TABLE IF NOT EXISTS uses (key TEXT PRIMARY KEY, at REAL NOT NULL, until REAL);
CREATE TABLE IF NOT EXISTS revocations (
    kind TEXT NOT NULL, value TEXT NOT NULL, at REAL NOT NULL, until REAL, PRIMARY KEY (kind, value)
);
CREATE TABLE IF NOT EXISTS signing_keys (
    kid TEXT PRIMARY KEY, material TEXT NOT NULL, created_at REAL NOT NULL, retired_at REAL, usable_until REAL
);
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL, expires_at REAL, PRIMARY KEY (kind, key)
);
"""


class Connections:
    """Runs calls on the writer's or a reader's connection, opening them (and the file) on first use."""

    def __init__(self, path: Path, readers: int, timeout: float) -> None:
        self.path = path
        self._readers = readers
        self._timeout = timeout
        self._lock = threading.Lock()  # guards the fields below
        self._prepared = False
        self.closing = False  # read by calls waiting for a lock: stop waiting
        self._opened: list[sqlite3.Connection] = []
        self._local = threading.local()  # each thread's own connection
        self._writer, self._reader = self._executors()

    def _executors(self) -> tuple[ThreadPoolExecutor, ThreadPoolExecutor]:
        return (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="labgate-sqlite-writer"),
            ThreadPoolExecutor(max_workers=self._readers, thread_name_prefix="labgate-sqlite-reader"),
        )

    def submit(self, call: Callable[[sqlite3.Connection], T], *, write: bool) -> Future[T]:
        """``call(connection)`` on the writer thread (``write``) or a reader thread."""
        with self._lock:
            executor = self._writer if write else self._reader
        return executor.submit(self._call, call, write)

    def _call(self, call: Callable[[sqlite3.Connection], T], write: bool) -> T:
        db = getattr(self._local, "db", None)
        if db is None:
            try:
                db = self._open(write)
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"sqlite store {self.path}: {exc}") from exc
            self._local.db = db
        return call(db)

    def _open(self, write: bool) -> sqlite3.Connection:
        with self._lock:
            if not self._prepared:
                _prepare(self.path, self._timeout)
                self._prepared = True
            db = sqlite3.connect(self.path, check_same_thread=False, timeout=self._timeout, isolation_level=None)
            self._opened.append(db)
        if write:
            db.execute("PRAGMA synchronous=NORMAL")
        else:
            db.execute("PRAGMA query_only=1")
        return db

    def close(self) -> None:
        """Stop running calls (a write waiting for a lock gives up at once), close every connection.

        The next call opens afresh.
        """
        with self._lock:
            writer, reader = self._writer, self._reader
            self._writer, self._reader = self._executors()
            self.closing = True
            for db in self._opened:
                db.interrupt()  # thread-safe: a statement running on it stops with "interrupted"
        writer.shutdown(wait=True, cancel_futures=True)
        reader.shutdown(wait=True, cancel_futures=True)
        with self._lock:
            opened, self._opened = self._opened, []
            self._local = threading.local()
            self.closing = False
        for db in opened:
            db.close()


def _prepare(path: Path, timeout: float) -> None:
    """Create the file (owner-only), switch it to WAL, check and create the schema.

    A file already in WAL with the current schema is only read here, so a
    process starting while another holds the write lock (``labgate revoke``
    beside a busy labgate) does not wait for it before its first call.
    """
    _create_private(path)
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None)
    try:
        if str(db.execute("PRAGMA journal_mode").fetchone()[0]).lower() != "wal":
            _switch_to_wal(db)
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreUnavailable(f"{path} was written by a newer labgate (schema {version})")
        if version < SCHEMA_VERSION:
            db.executescript(SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    finally:
        db.close()


def _switch_to_wal(db: sqlite3.Connection) -> None:
    """Processes opening a new file together race to switch it to WAL.

    The switch needs the file to itself and fails with SQLITE_BUSY at once,
    without waiting out the busy timeout: try again, a bounded number of times.
    """
    for attempt in range(WAL_SWITCH_TRIES):
        try:
            db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY or attempt == WAL_SWITCH_TRIES - 1:
                raise
            time.sleep(0.02)


def _create_private(path: Path) -> None:
    """A new store file is readable by its owner only: it may hold labgate's private signing keys.

    SQLite gives its -wal and -shm files the database file's permissions.
    """
    with contextlib.suppress(OSError):  # exists already, or no folder: sqlite3 reports the latter itself
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))


