"""The shared store: Redis, for several workers and replicas.

Every key carries the configured prefix and expires by itself (``EXAT``) when
what it describes can no longer matter, so nothing needs sweeping.  A
revocation written by one replica is read by every other on its next request.
"""

from __future__ import annotations

import math

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from proxy.store.base import RevocationKind, StoreUnavailable, TokenRecord

# Last use only ever moves forward, even when two replicas write at once.
_TOUCH = """
local current = redis.call('GET', KEYS[1])
if (not current) or tonumber(current) < tonumber(ARGV[1]) then
  if ARGV[2] == '' then
    redis.call('SET', KEYS[1], ARGV[1])
  else
    redis.call('SET', KEYS[1], ARGV[1], 'EXAT', ARGV[2])
  end
end
return 1
"""


class RedisStore:
    def __init__(self, url: str, *, prefix: str = "labgate:", timeout: float = 2.0) -> None:
        self.url = url
        self._prefix = prefix
        self._client = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._touch = self._client.register_script(_TOUCH)

    def _key(self, *parts: str) -> str:
        return self._prefix + ":".join(parts)

    async def put_token(self, key: str, record: TokenRecord) -> None:
        try:
            await self._client.set(self._key("token", key), record.to_json(), exat=_exat(record.expires_at))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis store: {type(exc).__name__}") from exc

    async def get_token(self, key: str, now: float) -> TokenRecord | None:
        try:
            raw = await self._client.get(self._key("token", key))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis store: {type(exc).__name__}") from exc
        if raw is None:
            return None
        record = TokenRecord.from_json(raw)
        if record.expires_at is not None and record.expires_at <= now:
            return None  # EXAT has whole-second resolution
        return record

    async def drop_token(self, key: str) -> bool:
        try:
            removed = await self._client.delete(self._key("token", key), self._key("use", key))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis store: {type(exc).__name__}") from exc
        return bool(removed)

    async def touch(self, key: str, at: float, until: float | None = None) -> None:
        exat = _exat(until)
        try:
            await self._touch(keys=[self._key("use", key)], args=[repr(at), "" if exat is None else str(exat)])
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis store: {type(exc).__name__}") from exc

    async def last_used(self, key: str) -> float | None:
        try:
            raw = await self._client.get(self._key("use", key))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis store: {type(exc).__name__}") from exc
        return float(raw) if raw is not None else None

    async def revoke(self, kind: RevocationKind, value: str, at: float, until: float | None = None) -> None:
        try:
            await self._client.set(self._key("revoked", kind, value), repr(at), exat=_exat(until))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis store: {type(exc).__name__}") from exc

    async def revoked_at(self, kind: RevocationKind, value: str, now: float) -> float | None:
        try:
            raw = await self._client.get(self._key("revoked", kind, value))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis store: {type(exc).__name__}") from exc
        return float(raw) if raw is not None else None

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis store: {type(exc).__name__}") from exc

    async def close(self) -> None:
        await self._client.aclose()


def _exat(moment: float | None) -> int | None:
    """Whole seconds, rounded up: a key never disappears before its moment."""
    return None if moment is None else math.ceil(moment)
