"""The embedded default: one SQLite file that survives restarts.

sqlite3 is blocking, so every call runs on the store's own threads: writes one
at a time on one connection, reads on a few reader connections beside it.  In
WAL mode readers see the last commit while a writer, of this process or
another (``labgate serve --workers``, ``labgate token``), holds the write lock,
so a slow or locked writer never stalls token checks.  Every call is answered
within the timeout; any SQLite error, or a lock not released in time, is
:class:`StoreUnavailable`: fail closed.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from proxy.store.base import (
    RevocationFeed,
    RevocationKind,
    SigningKeyRecord,
    StoreUnavailable,
    TokenRecord,
    TokenUse,
)
from proxy.store.gcra import LocalRates, RateCheck, RateGrant, RateVerdict
from proxy.store.sqlite_connections import DEFAULT_TIMEOUT, READERS, Connections

T = TypeVar("T")
SWEEP_INTERVAL = 60.0
BUSY_SLICE = 0.1  # seconds SQLite waits for another process's lock before labgate looks at its own deadline


class SqliteStore:
    # Revocations are not announced: each process asks the file (through its half-second answer cache).
    revocation_feed: RevocationFeed | None = None

    def __init__(self, path: Path, *, timeout: float = DEFAULT_TIMEOUT, readers: int = READERS) -> None:
        self.path = path
        self.timeout = timeout
        self._connections = Connections(path, readers, timeout)
        self._next_sweep = 0.0
        self._rates = LocalRates()

    async def _run(self, work: Callable[[sqlite3.Connection], T], *, write: bool = True) -> T:
        """``work`` on a writer or reader connection, answered within the timeout however busy the file is.

        The work runs on the store's own threads, never the event loop's or
        the shared default pool.  A call still queued when its time is up is
        not run at all; a write waits for another process's lock only as long
        as its caller still waits.
        """
        deadline = time.monotonic() + self.timeout

        def call(db: sqlite3.Connection) -> T:
            # A locked file is waited for in short slices: a closing store stops waiting at once.
            # A statement that met the lock changed nothing, so trying the work again is safe.
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or self._connections.closing:
                    raise StoreUnavailable(f"sqlite store {self.path}: the file stayed locked for {self.timeout:g} s")
                try:
                    if write:
                        db.execute(f"PRAGMA busy_timeout = {max(1, int(min(left, BUSY_SLICE) * 1000))}")
                    return work(db)
                except sqlite3.OperationalError as exc:
                    if not (write and _locked(exc)):
                        raise StoreUnavailable(f"sqlite store {self.path}: {exc}") from exc
                except sqlite3.Error as exc:
                    raise StoreUnavailable(f"sqlite store {self.path}: {exc}") from exc

        future = self._connections.submit(call, write=write)
        try:
            async with asyncio.timeout(self.timeout):
                return await asyncio.wrap_future(future)
        except TimeoutError:
            future.cancel()
            raise StoreUnavailable(f"sqlite store {self.path}: no answer within {self.timeout:g} s") from None

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """A read, on a reader connection: WAL lets it see the last commit while a writer (any process) writes."""
        return await self._run(work, write=False)

    async def put_token(self, key: str, record: TokenRecord) -> None:
        await self._run(lambda db: db.execute(
            "INSERT OR REPLACE INTO tokens (key, record, expires_at) VALUES (?, ?, ?)",
            (key, record.to_json(), record.expires_at),
        ))

    async def get_token(self, key: str, now: float) -> TokenRecord | None:
        row = await self._read(lambda db: db.execute(
            "SELECT record FROM tokens WHERE key = ? AND (expires_at IS NULL OR expires_at > ?)", (key, now)
        ).fetchone())
        return TokenRecord.from_json(row[0]) if row else None

    async def drop_token(self, key: str) -> bool:
        def drop(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM uses WHERE key = ?", (key,))
            return db.execute("DELETE FROM tokens WHERE key = ?", (key,)).rowcount > 0

        return await self._run(drop)

    async def touch(self, key: str, at: float, until: float | None = None) -> None:
        await self.touch_many([TokenUse(key, at, until)])

    async def touch_many(self, uses: Sequence[TokenUse]) -> None:
        if not uses:
            return

        def write(db: sqlite3.Connection) -> None:
            db.executemany(
                "INSERT INTO uses (key, at, until) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET at = max(at, excluded.at), until = excluded.until",
                [(use.key, use.at, use.until) for use in uses],
            )
            self._sweep_now_and_then(db, max(use.at for use in uses))

        await self._run(write)

    async def last_used(self, key: str) -> float | None:
        row = await self._read(lambda db: db.execute("SELECT at FROM uses WHERE key = ?", (key,)).fetchone())
        return float(row[0]) if row else None

    async def revoke(self, kind: RevocationKind, value: str, at: float, until: float | None = None) -> None:
        await self._run(lambda db: db.execute(
            "INSERT OR REPLACE INTO revocations (kind, value, at, until) VALUES (?, ?, ?, ?)", (kind, value, at, until)
        ))

    async def revoked_at(self, kind: RevocationKind, value: str, now: float) -> float | None:
        row = await self._read(lambda db: db.execute(
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

        return await self._read(read)  # one trip to the store's thread for all of them

    async def signing_keys(self, now: float) -> list[SigningKeyRecord]:
        rows = await self._read(lambda db: db.execute(
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

    async def add_record(self, kind: str, key: str, value: str, now: float, expires_at: float | None = None) -> bool:
        # One statement: inserts, or replaces only a record already past its expiry.
        return await self._run(lambda db: db.execute(
            "INSERT INTO records (kind, key, value, expires_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (kind, key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at "
            "WHERE records.expires_at IS NOT NULL AND records.expires_at <= ?",
            (kind, key, value, expires_at, now),
        ).rowcount > 0)

    async def get_record(self, kind: str, key: str, now: float) -> str | None:
        row = await self._read(lambda db: db.execute(
            "SELECT value FROM records WHERE kind = ? AND key = ? AND (expires_at IS NULL OR expires_at > ?)",
            (kind, key, now),
        ).fetchone())
        return str(row[0]) if row else None

    async def list_records(self, kind: str, now: float) -> list[tuple[str, str]]:
        rows = await self._read(lambda db: db.execute(
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

    async def reserve_rate(self, check: RateCheck, most: int, now: float) -> RateGrant:
        return self._rates.reserve(check, most, now)

    def local_rates(self) -> LocalRates:
        return self._rates

    async def forget_expired(self, now: float) -> int:
        """Delete what no longer matters; returns the number of rows removed."""
        return await self._run(lambda db: _sweep(db, now))

    def _sweep_now_and_then(self, db: sqlite3.Connection, now: float) -> None:
        """Recording uses sweeps expired rows at most once a minute, so the file stays bounded."""
        if now >= self._next_sweep:
            self._next_sweep = now + SWEEP_INTERVAL
            _sweep(db, now)

    async def ping(self) -> None:
        await self._read(lambda db: db.execute("SELECT 1").fetchone())

    async def close(self) -> None:
        await asyncio.to_thread(self._connections.close)


def _locked(exc: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY (another connection holds the lock), extended codes included."""
    return getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_BUSY


def _sweep(db: sqlite3.Connection, now: float) -> int:
    removed = db.execute("DELETE FROM tokens WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)).rowcount
    removed += db.execute("DELETE FROM uses WHERE until IS NOT NULL AND until <= ?", (now,)).rowcount
    removed += db.execute("DELETE FROM revocations WHERE until IS NOT NULL AND until <= ?", (now,)).rowcount
    removed += db.execute("DELETE FROM signing_keys WHERE usable_until IS NOT NULL AND usable_until <= ?", (now,)).rowcount
    removed += db.execute("DELETE FROM records WHERE expires_at IS NOT NULL AND expires_at <= ?", (now,)).rowcount
    return int(removed)


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
