"""The embedded default: one SQLite file that survives restarts.

sqlite3 is blocking, so every call runs in a worker thread, one at a time on
one connection (WAL mode lets ``labgate serve --workers`` processes share the
file).  Any SQLite error is :class:`StoreUnavailable`: fail closed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, Sequence, TypeVar

from proxy.store.base import RevocationKind, SigningKeyRecord, StoreUnavailable, TokenRecord
from proxy.store.gcra import LocalRates, RateCheck, RateVerdict

T = TypeVar("T")
SCHEMA_VERSION = 1
SWEEP_INTERVAL = 60.0
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


class SqliteStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        self._next_sweep = 0.0
        self._rates = LocalRates()

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            _create_private(self.path)
            db = sqlite3.connect(self.path, check_same_thread=False, timeout=5.0, isolation_level=None)
            _switch_to_wal(db)
            db.execute("PRAGMA synchronous=NORMAL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                db.close()
                raise StoreUnavailable(f"{self.path} was written by a newer labgate (schema {version})")
            db.executescript(SCHEMA)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            self._db = db
        return self._db

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        def call() -> T:
            with self._lock:
                try:
                    return work(self._connection())
                except sqlite3.Error as exc:
                    raise StoreUnavailable(f"sqlite store {self.path}: {exc}") from exc

        return await asyncio.to_thread(call)

    async def put_token(self, key: str, record: TokenRecord) -> None:
        await self._run(lambda db: db.execute(
            "INSERT OR REPLACE INTO tokens (key, record, expires_at) VALUES (?, ?, ?)",
            (key, record.to_json(), record.expires_at),
        ))

    async def get_token(self, key: str, now: float) -> TokenRecord | None:
        row = await self._run(lambda db: db.execute(
            "SELECT record FROM tokens WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)", (key, now)
        ).fetchone())
        return TokenRecord.from_json(row[0]) if row else None

    async def drop_token(self, key: str) -> bool:
        def drop(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM uses WHERE key = ?", (key,))
            return db.execute("DELETE FROM tokens WHERE key = ?", (key,)).rowcount > 0

        return await self._run(drop)

    async def touch(self, key: str, at: float, until: float | None = None) -> None:
        def write(db: sqlite3.Connection) -> None:
            db.execute(
                "INSERT INTO uses (key, at, until) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET at = max(at, excluded.at), until = excluded.until",
                (key, at, until),
            )
            self._sweep_now_and_then(db, at)

        await self._run(write)

    async def last_used(self, key: str) -> float | None:
        row = await self._run(lambda db: db.execute("SELECT at FROM uses WHERE key = ?", (key,)).fetchone())
        return float(row[0]) if row else None

    async def revoke(self, kind: RevocationKind, value: str, at: float, until: float | None = None) -> None:
        await self._run(lambda db: db.execute(
            "INSERT OR REPLACE INTO revocations (kind, value, at, until) VALUES (?, ?, ?, ?)", (kind, value, at, until)
        ))

    async def revoked_at(self, kind: RevocationKind, value: str, now: float) -> float | None:
        row = await self._run(lambda db: db.execute(
            "SELECT at FROM revocations WHERE kind = ? AND value = ? AND (until IS NULL OR until > ?)", (kind, value, now)
        ).fetchone())
        return float(row[0]) if row else None

    async def revocations(self, items: Sequence[tuple[RevocationKind, str]], now: float) -> list[float | None]:
        def read(db: sqlite3.Connection) -> list[float | None]:
            rows = [
                db.execute(
                    "SELECT at FROM revocations WHERE kind = ? AND value = ? AND (until IS NULL OR until > ?)",
                    (kind, value, now),
                ).fetchone()
                for kind, value in items
            ]
            return [float(row[0]) if row else None for row in rows]

        return await self._run(read)  # one trip to the store's thread for all of them

    async def signing_keys(self, now: float) -> list[SigningKeyRecord]:
        rows = await self._run(lambda db: db.execute(
            "SELECT material, retired_at, usable_until FROM signing_keys WHERE usable_until IS NULL OR usable_until > ? "
            "ORDER BY created_at, kid",
            (now,),
        ).fetchall())
        return [SigningKeyRecord.from_material(*row) for row in rows]

    async def add_first_signing_key(self, key: SigningKeyRecord) -> bool:
        def add(db: sqlite3.Connection) -> bool:
            if db.execute("SELECT 1 FROM signing_keys WHERE retired_at IS NULL LIMIT 1").fetchone():
                return False
            _insert_signing_key(db, key)
            return True

        return await self._run(lambda db: _in_transaction(db, add))

    async def rotate_signing_key(self, key: SigningKeyRecord, usable_until: float) -> None:
        def rotate(db: sqlite3.Connection) -> None:
            at = key.created_at
            db.execute(
                "UPDATE signing_keys SET retired_at = ?, usable_until = ? WHERE retired_at IS NULL", (at, usable_until)
            )
            db.execute("DELETE FROM signing_keys WHERE usable_until IS NOT NULL AND usable_until <= ?", (at,))
            _insert_signing_key(db, key)

        await self._run(lambda db: _in_transaction(db, rotate))

    async def put_record(self, kind: str, key: str, value: str, expires_at: float | None = None) -> None:
        await self._run(lambda db: db.execute(
            "INSERT OR REPLACE INTO records (kind, key, value, expires_at) VALUES (?, ?, ?, ?)",
            (kind, key, value, expires_at),
        ))

    async def get_record(self, kind: str, key: str, now: float) -> str | None:
        row = await self._run(lambda db: db.execute(
            "SELECT value FROM records WHERE kind = ? AND key = ? AND (expires_at IS NULL OR expires_at > ?)",
            (kind, key, now),
        ).fetchone())
        return str(row[0]) if row else None

    async def list_records(self, kind: str, now: float) -> list[tuple[str, str]]:
        rows = await self._run(lambda db: db.execute(
            "SELECT key, value FROM records WHERE kind = ? AND (expires_at IS NULL OR expires_at > ?) ORDER BY key",
            (kind, now),
        ).fetchall())
        return [(str(key), str(value)) for key, value in rows]

    async def delete_record(self, kind: str, key: str) -> bool:
        return await self._run(lambda db: db.execute(
            "DELETE FROM records WHERE kind = ? AND key = ?", (kind, key)
        ).rowcount > 0)

    async def take_record(self, kind: str, key: str, now: float) -> str | None:
        # One statement is one write transaction: of several processes on the file, one deletes the row.
        rows = await self._run(lambda db: db.execute(
            "DELETE FROM records WHERE kind = ? AND key = ? RETURNING value, expires_at", (kind, key)
        ).fetchall())  # read to the end: the statement, and its transaction, finish here
        if not rows or (rows[0][1] is not None and rows[0][1] <= now):
            return None
        return str(rows[0][0])

    async def rate_limit(self, checks: Sequence[RateCheck], now: float) -> RateVerdict:
        """Budgets in this process, not in the file (:class:`~proxy.store.gcra.LocalRates`): each worker keeps its own."""
        return self._rates.check(checks, now)

    async def forget_expired(self, now: float) -> int:
        """Delete what no longer matters; returns the number of rows removed."""
        return await self._run(lambda db: _sweep(db, now))

    def _sweep_now_and_then(self, db: sqlite3.Connection, now: float) -> None:
        """Recording uses sweeps expired rows at most once a minute, so the file stays bounded."""
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_INTERVAL
            _sweep(db, now)

    async def ping(self) -> None:
        await self._run(lambda db: db.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        def close() -> None:
            with self._lock:
                if self._db is not None:
                    self._db.close()
                    self._db = None

        await asyncio.to_thread(close)


def _sweep(db: sqlite3.Connection, now: float) -> int:
    removed = db.execute("DELETE FROM tokens WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)).rowcount
    removed += db.execute("DELETE FROM uses WHERE until IS NOT NULL AND until <= ?", (now,)).rowcount
    removed += db.execute("DELETE FROM revocations WHERE until IS NOT NULL AND until <= ?", (now,)).rowcount
    removed += db.execute("DELETE FROM signing_keys WHERE usable_until IS NOT NULL AND usable_until <= ?", (now,)).rowcount
    removed += db.execute("DELETE FROM records WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)).rowcount
    return int(removed)


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


def _in_transaction(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """``work`` as one write transaction: other processes on the file see all of it or none."""
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def _insert_signing_key(db: sqlite3.Connection, key: SigningKeyRecord) -> None:
    db.execute(
        "INSERT INTO signing_keys (kid, material, created_at, retired_at, usable_until) VALUES (?, ?, ?, NULL, NULL)",
        (key.kid, key.material_json(), key.created_at),
    )
