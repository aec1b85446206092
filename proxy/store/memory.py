"""The in-process store: for tests and single-process trials; nothing survives a restart."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from proxy.store.base import (
    RevocationFeed,
    RevocationKind,
    SigningKeyRecord,
    TokenRecord,
    TokenUse,
    signing_key_order,
)
from proxy.store.gcra import LocalRates, RateCheck, RateGrant, RateVerdict


class MemoryStore:
    revocation_feed: RevocationFeed | None = None  # one process: its guard sees its own revocations at once

    def __init__(self) -> None:
        self._tokens: dict[str, TokenRecord] = {}
        self._uses: dict[str, float] = {}
        self._revocations: dict[tuple[str, str], tuple[float, float | None]] = {}
        self._signing_keys: dict[str, SigningKeyRecord] = {}
        self._records: dict[tuple[str, str], tuple[str, float | None]] = {}
        self._rates = LocalRates()

    async def put_token(self, key: str, record: TokenRecord) -> None:
        self._tokens[key] = record

    async def get_token(self, key: str, now: float) -> TokenRecord | None:
        record = self._tokens.get(key)
        if record is not None and record.expires_at is not None and record.expires_at <= now:
            del self._tokens[key]
            self._uses.pop(key, None)
            return None
        return record

    async def drop_token(self, key: str) -> bool:
        self._uses.pop(key, None)
        return self._tokens.pop(key, None) is not None

    async def touch(self, key: str, at: float, until: float | None = None) -> None:
        self._uses[key] = max(at, self._uses.get(key, at))

    async def touch_many(self, uses: Sequence[TokenUse]) -> None:
        for use in uses:
            await self.touch(use.key, use.at, use.until)

    async def last_used(self, key: str) -> float | None:
        return self._uses.get(key)

    async def revoke(self, kind: RevocationKind, value: str, at: float, until: float | None = None) -> None:
        self._revocations[(kind, value)] = (at, until)

    async def revocations(self, items: Sequence[tuple[RevocationKind, str]], now: float) -> list[float | None]:
        return [await self.revoked_at(kind, value, now) for kind, value in items]

    async def revoked_at(self, kind: RevocationKind, value: str, now: float) -> float | None:
        found = self._revocations.get((kind, value))
        if found is None:
            return None
        at, until = found
        if until is not None and until <= now:
            del self._revocations[(kind, value)]
            return None
        return at

    async def signing_keys(self, now: float) -> list[SigningKeyRecord]:
        self._forget_signing_keys(now)
        return sorted(self._signing_keys.values(), key=signing_key_order)

    async def add_first_signing_key(self, key: SigningKeyRecord) -> bool:
        if any(k.active for k in self._signing_keys.values()):
            return False
        self._signing_keys[key.kid] = replace(key, retired_at=None, usable_until=None)
        return True

    async def rotate_signing_key(self, key: SigningKeyRecord, usable_until: float) -> None:
        at = key.created_at
        for kid, old in list(self._signing_keys.items()):
            if old.active:
                self._signing_keys[kid] = replace(old, retired_at=at, usable_until=usable_until)
        self._forget_signing_keys(at)
        self._signing_keys[key.kid] = replace(key, retired_at=None, usable_until=None)

    def _forget_signing_keys(self, now: float) -> None:
        for kid, key in list(self._signing_keys.items()):
            if key.usable_until is not None and key.usable_until <= now:
                del self._signing_keys[kid]

    async def put_record(self, kind: str, key: str, value: str, expires_at: float | None = None) -> None:
        self._records[(kind, key)] = (value, expires_at)

    async def add_record(self, kind: str, key: str, value: str, now: float, expires_at: float | None = None) -> bool:
        if await self.get_record(kind, key, now) is not None:  # drops an expired one; no await yields in between
            return False
        self._records[(kind, key)] = (value, expires_at)
        return True

    async def get_record(self, kind: str, key: str, now: float) -> str | None:
        found = self._records.get((kind, key))
        if found is None:
            return None
        value, expires_at = found
        if expires_at is not None and expires_at <= now:
            del self._records[(kind, key)]
            return None
        return value

    async def list_records(self, kind: str, now: float) -> list[tuple[str, str]]:
        for (record_kind, key), (_, expires_at) in list(self._records.items()):
            if expires_at is not None and expires_at <= now:
                del self._records[(record_kind, key)]
        return sorted((key, value) for (record_kind, key), (value, _) in self._records.items() if record_kind == kind)

    async def delete_record(self, kind: str, key: str) -> bool:
        return self._records.pop((kind, key), None) is not None

    async def take_record(self, kind: str, key: str, now: float) -> str | None:
        found = self._records.pop((kind, key), None)  # no await between read and delete: atomic
        if found is None:
            return None
        value, expires_at = found
        return None if expires_at is not None and expires_at <= now else value

    async def rate_limit(self, checks: Sequence[RateCheck], now: float) -> RateVerdict:
        return self._rates.check(checks, now)

    async def reserve_rate(self, check: RateCheck, most: int, now: float) -> RateGrant:
        return self._rates.reserve(check, most, now)

    def local_rates(self) -> LocalRates:
        return self._rates

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
