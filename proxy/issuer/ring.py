"""The key ring: labgate's signing keys as the store has them, and rotation.

The store is the one place keys live, so every worker, replica and ``labgate
keys`` command sees the same ring.  A running labgate reads it:

* on first use, then again once ``key_refresh_interval`` has passed, so a
  rotation made by the CLI or another replica is signing everywhere within
  that interval, without a restart;
* again for a ``kid`` it does not know (it may have just been rotated in),
  at most once per :data:`RETRY_INTERVAL`, so made-up kids cannot turn into a
  stream of store reads;
* with one read in flight however many requests wait for it.

A failed read keeps the last good ring (retired keys still stop verifying on
time: usability is checked against the clock at every use); with none ever
read, :class:`KeysUnavailable` (503, fail closed).

With a key passphrase, a key is trusted (to verify as well as to sign) only
when its private half opens with the passphrase and matches its public half:
whoever can write to the store but does not know the passphrase cannot slip
in a key of their own.  Each key is opened once per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from proxy.issuer.keys import (
    SigningKeyUnusable,
    load_private_key,
    new_signing_key,
    verification_key,
)
from proxy.issuer.settings import IssuerSettings
from proxy.store.base import SigningKeyRecord, Store, StoreUnavailable
from proxy.verification_keys import KeysUnavailable, VerificationKey

logger = logging.getLogger("labgate")

RETRY_INTERVAL = 1.0  # seconds between reads for an unknown kid, or after a failed read


@dataclass(frozen=True)
class RingKey:
    """A stored key with its public half loaded."""

    record: SigningKeyRecord
    verification: VerificationKey

    def usable_at(self, now: float) -> bool:
        return self.record.usable_until is None or now < self.record.usable_until


@dataclass(frozen=True)
class SigningKey:
    """What signs a token: the active key's kid and algorithm, and its private key."""

    kid: str
    algorithm: str
    private_key: Any = field(repr=False)


class KeyRing:
    """One process's view of the ring; implements :class:`proxy.verification_keys.KeySet` for verification."""

    def __init__(self, store: Store, settings: IssuerSettings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.clock = clock  # verification beside the ring (the issuer source) reads the same clock
        self._store = store
        self._keys: tuple[RingKey, ...] | None = None
        self._read_at = 0.0  # last good read
        self._attempted_at: float | None = None  # last read, good or not
        self._inflight: asyncio.Task[None] | None = None
        self._private: dict[str, Any] = {}  # kid -> loaded private key, for the keys in the ring
        self._skipped: set[str] = set()  # kids whose public key did not load (logged once)

    # -- verifying ---------------------------------------------------------------

    async def get(self, kid: str | None, algorithm: str) -> VerificationKey | None:
        """The key for this kid and algorithm if it may verify now; KeysUnavailable when the ring was never read."""
        await self._fresh()
        found = self._find(kid, algorithm)
        if found is None and kid is not None:
            await self._read(retry=True)
            found = self._find(kid, algorithm)
        return found.verification if found is not None else None

    def _find(self, kid: str | None, algorithm: str) -> RingKey | None:
        now = self.clock()
        return next(
            (k for k in self._keys or () if k.record.kid == kid and k.record.algorithm == algorithm and k.usable_at(now)),
            None,
        )

    async def published(self) -> tuple[SigningKeyRecord, ...]:
        """Every key that may verify a token now (the active one and retired ones within their grace)."""
        await self._fresh()
        now = self.clock()
        return tuple(k.record for k in self._keys or () if k.usable_at(now))

    # -- signing -----------------------------------------------------------------

    async def signing_key(self) -> SigningKey:
        """The active key, ready to sign; the ring's first key is made here when there is none.

        Raises KeysUnavailable (the store cannot be read or written) or
        SigningKeyUnusable (the private key does not load: passphrase).
        """
        await self._fresh()
        active = self._active()
        if active is None:
            try:
                await ensure_signing_key(self._store, self.settings, now=self.clock())
            except StoreUnavailable as exc:
                raise KeysUnavailable(str(exc)) from None
            for _ in range(2):  # a read already in flight when the key was added does not show it
                await self._read(retry=False)
                active = self._active()
                if active is not None:
                    break
            else:
                raise KeysUnavailable("the key ring has no active signing key")
        record = active.record
        if record.kid not in self._private:
            self._private[record.kid] = load_private_key(record, self.settings.key_passphrase)
        return SigningKey(record.kid, record.algorithm, self._private[record.kid])

    def _active(self) -> RingKey | None:
        """The newest active key; the store keeps at most one, this copes with any."""
        active = [k for k in self._keys or () if k.record.active]
        return active[-1] if active else None

    # -- reading the store -------------------------------------------------------

    async def _fresh(self) -> None:
        if self._keys is None or self.clock() - self._read_at >= self.settings.key_refresh_interval:
            await self._read(retry=True)
        if self._keys is None:
            raise KeysUnavailable("the signing keys cannot be read from the store")

    async def _read(self, *, retry: bool) -> None:
        """Join the read in flight, or start one; ``retry`` reads are at most one per RETRY_INTERVAL."""
        if self._inflight is None:
            now = self.clock()
            if retry and self._attempted_at is not None and now - self._attempted_at < RETRY_INTERVAL:
                return
            self._attempted_at = now
            self._inflight = asyncio.create_task(self._read_and_keep())
        await asyncio.shield(self._inflight)

    async def _read_and_keep(self) -> None:
        try:
            records = await self._store.signing_keys(self.clock())
        except StoreUnavailable as exc:
            logger.warning("signing keys not read (%s); keeping the last good key ring", exc)
            return
        finally:
            self._inflight = None
        keys = []
        for record in records:
            try:
                if self.settings.key_passphrase and record.kid not in self._private:
                    self._private[record.kid] = load_private_key(record, self.settings.key_passphrase)
                keys.append(RingKey(record, verification_key(record)))
            except (ValueError, SigningKeyUnusable) as exc:
                if record.kid not in self._skipped:
                    self._skipped.add(record.kid)
                    logger.error("signing key %s is not trusted and skipped: %s", record.kid, exc)
        self._keys = tuple(keys)
        self._read_at = self.clock()
        kids = {k.record.kid for k in keys}
        self._private = {kid: key for kid, key in self._private.items() if kid in kids}

    async def close(self) -> None:
        task = self._inflight
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def ensure_signing_key(store: Store, settings: IssuerSettings, *, now: float) -> SigningKeyRecord | None:
    """Make the ring's first key unless one is active; the new key, or None when there was one.

    Safe to race: the store adds a first key only while none is active.
    """
    if any(k.active for k in await store.signing_keys(now)):
        return None
    key = new_signing_key(settings.algorithm, now=now, passphrase=settings.key_passphrase)
    return key if await store.add_first_signing_key(key) else None


async def rotate_signing_key(store: Store, settings: IssuerSettings, *, now: float, drop_old: bool = False) -> SigningKeyRecord:
    """A new active key; the old ones verify for the issuer's grace, or (``drop_old``, a leaked key) not at all."""
    key = new_signing_key(settings.algorithm, now=now, passphrase=settings.key_passphrase)
    await store.rotate_signing_key(key, now if drop_old else now + settings.retired_key_grace)
    return key
