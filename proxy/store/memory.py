"""The in-process store: for tests and single-process trials; nothing survives a restart."""

from __future__ import annotations

from proxy.store.base import RevocationKind, TokenRecord


class MemoryStore:
    def __init__(self) -> None:
        self._tokens: dict[str, TokenRecord] = {}
        self._uses: dict[str, float] = {}
        self._revocations: dict[tuple[str, str], tuple[float, float | None]] = {}

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

    async def last_used(self, key: str) -> float | None:
        return self._uses.get(key)

    async def revoke(self, kind: RevocationKind, value: str, at: float, until: float | None = None) -> None:
        self._revocations[(kind, value)] = (at, until)

    async def revoked_at(self, kind: RevocationKind, value: str, now: float) -> float | None:
        found = self._revocations.get((kind, value))
        if found is None:
            return None
        at, until = found
        if until is not None and until <= now:
            del self._revocations[(kind, value)]
            return None
        return at

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None
