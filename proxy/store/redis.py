"""The shared store: Redis, for several workers and replicas.

Every key carries the configured prefix and expires by itself (``EXAT``) when
what it describes can no longer matter, so nothing needs sweeping.  A
revocation written by one replica is read by every other on its next request.
"""

from __future__ import annotations

import math
from typing import Sequence

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from proxy.store.base import RevocationKind, SigningKeyRecord, StoreUnavailable, TokenRecord, signing_key_order
from proxy.store.gcra import RateCheck, RateVerdict, apply

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

# Signing keys: KEYS[1] maps kid -> the key's fixed JSON, KEYS[2] kid -> "retired_at usable_until".
# Active keys have no entry in KEYS[2].  The times travel as Python's repr of a float,
# untouched, so every backend gives back exactly what was written.
_ADD_FIRST_SIGNING_KEY = """
for _, kid in ipairs(redis.call('HKEYS', KEYS[1])) do
  if redis.call('HEXISTS', KEYS[2], kid) == 0 then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
_ROTATE_SIGNING_KEY = """
local at, usable_until = tonumber(ARGV[3]), tonumber(ARGV[4])
for _, kid in ipairs(redis.call('HKEYS', KEYS[1])) do
  local retired = redis.call('HGET', KEYS[2], kid)
  local ends = usable_until
  if retired then ends = tonumber(string.match(retired, ' (.+)$')) end
  if ends <= at then
    redis.call('HDEL', KEYS[1], kid)
    redis.call('HDEL', KEYS[2], kid)
  elseif not retired then
    redis.call('HSET', KEYS[2], kid, ARGV[3] .. ' ' .. ARGV[4])
  end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# Records: KEYS[1] holds "expires_at|value" (expires_at empty when none) and expires by
# itself; KEYS[2], a sorted set per kind, names the kind's keys scored by expiry so a
# kind can be listed without scanning the keyspace.  Index entries whose record has
# expired by the server's clock (the clock EXAT goes by) are dropped on every write.
_PUT_RECORD = """
if ARGV[3] == '' then
  redis.call('SET', KEYS[1], ARGV[2])
else
  redis.call('SET', KEYS[1], ARGV[2], 'EXAT', ARGV[3])
end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
local clock = redis.call('TIME')
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. (tonumber(clock[1]) - 1))
return 1
"""
_TAKE_RECORD = """
local value = redis.call('GET', KEYS[1])
if value then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[1])
end
return value
"""

# GCRA (proxy/store/gcra.py, the same arithmetic) over every key at once: KEYS are the
# limits' keys, ARGV[1] is now, then interval and capacity per key.  Writes every new
# TAT only when every key allows; answers the verdict and the TATs it read, from which
# the caller works out each limit's remaining budget exactly as the other backends do.
_RATE_LIMIT = """
local now = tonumber(ARGV[1])
local allowed = 1
local read, new = {}, {}
for i = 1, #KEYS do
  local raw = redis.call('GET', KEYS[i])
  local interval, capacity = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local current = now
  if raw and tonumber(raw) > now then current = tonumber(raw) end
  new[i] = current + interval
  if now + 1e-9 < new[i] - interval * capacity then allowed = 0 end
  read[i] = raw or ''
end
if allowed == 1 then
  for i = 1, #KEYS do
    redis.call('SET', KEYS[i], string.format('%.17g', new[i]), 'PXAT', math.ceil(new[i] * 1000) + 1000)
  end
end
return {allowed, unpack(read)}
"""


class RedisStore:
    def __init__(self, url: str, *, prefix: str = "labgate:", timeout: float = 2.0) -> None:
        self.url = url
        self.prefix = prefix
        self._client = aioredis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._touch = self._client.register_script(_TOUCH)
        self._add_first_signing_key = self._client.register_script(_ADD_FIRST_SIGNING_KEY)
        self._rotate_signing_key = self._client.register_script(_ROTATE_SIGNING_KEY)
        self._put_record = self._client.register_script(_PUT_RECORD)
        self._take_record = self._client.register_script(_TAKE_RECORD)
        self._rate_limit = self._client.register_script(_RATE_LIMIT)
        self._signing_key_names = [self._key("signing_keys"), self._key("signing_keys_retired")]

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

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

    async def revocations(self, items: Sequence[tuple[RevocationKind, str]], now: float) -> list[float | None]:
        if not items:
            return []
        try:
            raws = await self._client.mget([self._key("revoked", kind, value) for kind, value in items])
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis store: {type(exc).__name__}") from exc
        return [float(raw) if raw is not None else None for raw in raws]

    async def signing_keys(self, now: float) -> list[SigningKeyRecord]:
        try:
            async with self._client.pipeline(transaction=True) as pipe:  # one consistent view of both hashes
                pipe.hgetall(self._signing_key_names[0])
                pipe.hgetall(self._signing_key_names[1])
                materials, retirements = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis store: {type(exc).__name__}") from exc
        keys = []
        for kid, material in materials.items():
            retired_at = usable_until = None
            if kid in retirements:
                at_text, _, until_text = retirements[kid].partition(b" ")
                retired_at, usable_until = float(at_text), float(until_text)
                if usable_until <= now:
                    continue
            keys.append(SigningKeyRecord.from_material(material, retired_at, usable_until))
        return sorted(keys, key=signing_key_order)

    async def add_first_signing_key(self, key: SigningKeyRecord) -> bool:
        try:
            added = await self._add_first_signing_key(keys=self._signing_key_names, args=[key.kid, key.material_json()])
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis store: {type(exc).__name__}") from exc
        return bool(added)

    async def rotate_signing_key(self, key: SigningKeyRecord, usable_until: float) -> None:
        args = [key.kid, key.material_json(), repr(float(key.created_at)), repr(float(usable_until))]
        try:
            await self._rotate_signing_key(keys=self._signing_key_names, args=args)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis store: {type(exc).__name__}") from exc

    def _record_keys(self, kind: str, key: str) -> list[str]:
        return [self._key("record", kind, key), self._key("records", kind)]

    async def put_record(self, kind: str, key: str, value: str, expires_at: float | None = None) -> None:
        exat = _exat(expires_at)
        stored = ("" if expires_at is None else repr(float(expires_at))) + "|" + value
        score = "+inf" if expires_at is None else repr(float(expires_at))
        try:
            await self._put_record(
                keys=self._record_keys(kind, key), args=[key, stored, "" if exat is None else str(exat), score]
            )
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis store: {type(exc).__name__}") from exc

    async def get_record(self, kind: str, key: str, now: float) -> str | None:
        try:
            raw = await self._client.get(self._key("record", kind, key))
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis store: {type(exc).__name__}") from exc
        return _live_record(raw, now)

    async def list_records(self, kind: str, now: float) -> list[tuple[str, str]]:
        try:
            members = await self._client.zrangebyscore(self._key("records", kind), f"({now!r}", "+inf")
            keys = [member.decode() if isinstance(member, bytes) else str(member) for member in members]
            raws = await self._client.mget([self._key("record", kind, key) for key in keys]) if keys else []
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis store: {type(exc).__name__}") from exc
        found = [(key, _live_record(raw, now)) for key, raw in zip(keys, raws)]
        return sorted((key, value) for key, value in found if value is not None)

    async def delete_record(self, kind: str, key: str) -> bool:
        record, index = self._record_keys(kind, key)
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(record)
                pipe.zrem(index, key)
                removed, _ = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis store: {type(exc).__name__}") from exc
        return bool(removed)

    async def take_record(self, kind: str, key: str, now: float) -> str | None:
        try:
            raw = await self._take_record(keys=self._record_keys(kind, key), args=[key])
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis store: {type(exc).__name__}") from exc
        return _live_record(raw, now)

    async def rate_limit(self, checks: Sequence[RateCheck], now: float) -> RateVerdict:
        arguments: list[str] = [repr(now)]
        for check in checks:
            arguments += [repr(check.interval), str(check.capacity)]
        try:
            answer = await self._rate_limit(keys=[self._key("rate", c.key) for c in checks], args=arguments)
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis store: {type(exc).__name__}") from exc
        read = [float(raw) if raw not in (b"", "") else None for raw in answer[1:]]
        verdict, _ = apply(read, checks, now)
        return verdict if verdict.allowed == (int(answer[0]) == 1) else RateVerdict(int(answer[0]) == 1, verdict.states)

    async def ping(self) -> None:
        try:
            await self._client.ping()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis store: {type(exc).__name__}") from exc

    async def close(self) -> None:
        await self._client.aclose()


def _live_record(raw: bytes | str | None, now: float) -> str | None:
    """The value of a stored "expires_at|value", or None when absent or past its expiry (EXAT is whole seconds)."""
    if raw is None:
        return None
    expires_text, _, value = (raw.decode() if isinstance(raw, bytes) else raw).partition("|")
    if expires_text and float(expires_text) <= now:
        return None
    return value


def _exat(moment: float | None) -> int | None:
    """Whole seconds, rounded up: a key never disappears before its moment."""
    return None if moment is None else math.ceil(moment)
