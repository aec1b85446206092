"""The shared store: Redis, for several workers and replicas.

Every key carries the configured prefix and expires by itself (``EXAT``) when
what it describes can no longer matter, so nothing needs sweeping.  A
revocation is written together with its notice on the ``<prefix>revocations``
channel, which every replica listens to (:mod:`proxy.store.redis_notices`):
each keeps a local view of revocations instead of asking Redis per request.

Every call is bounded by the store timeout from start to end (waiting for a
free pooled connection, connecting, retrying a dropped connection, the
answer): a frozen or unreachable Redis costs a request at most that long and
then fails closed with :class:`StoreUnavailable`.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from redis.exceptions import RedisError

from proxy.store import redis_scripts as scripts
from proxy.store.base import (
    RevocationFeed,
    RevocationKind,
    SigningKeyRecord,
    StoreUnavailable,
    TokenRecord,
    TokenUse,
    signing_key_order,
)
from proxy.store.gcra import RateCheck, RateGrant, RateVerdict, apply, granted_units
from proxy.store.redis_batch import ScriptBatches
from proxy.store.redis_connect import RedisTarget, open_clients
from proxy.store.redis_notices import RevocationListener, notice_text

T = TypeVar("T")
DEFAULT_TIMEOUT = 2.0
# As many as labgate's default limits.max_connections: every client connection may have a store call
# in flight.  Connections open only as a burst needs them; Redis allows 10,000 clients by default.
DEFAULT_MAX_CONNECTIONS = 1024

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

# A reservation (proxy/store/gcra.py, grant): up to ARGV[4] units of KEYS[1]'s budget at
# once, the largest number that conforms; ARGV[1] is now, ARGV[2] the interval, ARGV[3]
# the capacity.  Answers how many were granted and the TAT it read.
_RESERVE = """
local now, interval = tonumber(ARGV[1]), tonumber(ARGV[2])
local capacity, most = tonumber(ARGV[3]), tonumber(ARGV[4])
local raw = redis.call('GET', KEYS[1])
local current = now
if raw and tonumber(raw) > now then current = tonumber(raw) end
local granted = math.floor((now + 1e-9 + interval * capacity - current) / interval)
if granted > most then granted = most end
if granted < 0 then granted = 0 end
if granted > 0 then
  local new = current + granted * interval
  redis.call('SET', KEYS[1], string.format('%.17g', new), 'PXAT', math.ceil(new * 1000) + 1000)
end
return {granted, raw or ''}
"""


class RedisStore:
    def __init__(
        self,
        url: str | RedisTarget,
        *,
        prefix: str = "labgate:",
        timeout: float = DEFAULT_TIMEOUT,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
    ) -> None:
        self.target = RedisTarget(url=url) if isinstance(url, str) else url
        self.prefix = prefix
        self.timeout = timeout
        self._clients = open_clients(self.target, timeout=timeout, max_connections=max_connections)
        self._client, self._pinger = self._clients.main, self._clients.pinger
        self._touch = self._client.register_script(scripts.TOUCH)
        self._add_first_signing_key = self._client.register_script(scripts.ADD_FIRST_SIGNING_KEY)
        self._rotate_signing_key = self._client.register_script(scripts.ROTATE_SIGNING_KEY)
        self._put_record = self._client.register_script(scripts.PUT_RECORD)
        self._add_record = self._client.register_script(scripts.ADD_RECORD)
        self._take_record = self._client.register_script(scripts.TAKE_RECORD)
        # Every rate-limited request runs it: the calls of one loop turn share a round trip.
        self._rate_batches = ScriptBatches(self._client, self._client.register_script(_RATE_LIMIT), timeout)
        self._reserve_batches = ScriptBatches(self._client, self._client.register_script(_RESERVE), timeout)
        self._rate_prefix = self._key("rate", "")
        self._signing_key_names = [self._key("signing_keys"), self._key("signing_keys_retired")]
        self._notices = self._key("revocations")
        self._listener = RevocationListener(self._clients.subscriber, self._client, self._notices, timeout=timeout)
        self.revocation_feed: RevocationFeed | None = self._listener

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    async def _run(self, work: Callable[[], Awaitable[T]]) -> T:
        """``work`` within the store timeout; any failure is StoreUnavailable, naming its cause."""
        try:
            async with asyncio.timeout(self.timeout):
                return await work()
        except TimeoutError as exc:  # before OSError, of which it is a subclass
            raise StoreUnavailable(f"redis store ({self.target.describe()}): no answer within {self.timeout:g} s") from exc
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis store ({self.target.describe()}): {type(exc).__name__}: {exc}") from exc

    async def put_token(self, key: str, record: TokenRecord) -> None:
        await self._run(lambda: self._client.set(self._key("token", key), record.to_json(), exat=_exat(record.expires_at)))

    async def get_token(self, key: str, now: float) -> TokenRecord | None:
        raw = await self._run(lambda: self._client.get(self._key("token", key)))
        if raw is None:
            return None
        record = TokenRecord.from_json(raw)
        if record.expires_at is not None and record.expires_at <= now:
            return None  # EXAT has whole-second resolution
        return record

    async def drop_token(self, key: str) -> bool:
        return bool(await self._run(lambda: self._client.delete(self._key("token", key), self._key("use", key))))

    async def touch(self, key: str, at: float, until: float | None = None) -> None:
        exat = _exat(until)
        await self._run(lambda: self._touch(keys=[self._key("use", key)], args=[repr(at), "" if exat is None else str(exat)]))

    async def touch_many(self, uses: Sequence[TokenUse]) -> None:
        if not uses:
            return

        async def write() -> None:
            async with self._client.pipeline(transaction=False) as pipe:  # one round trip, each use on its own
                for use in uses:  # queued on the pipeline, sent together by execute()
                    exat = _exat(use.until)
                    args = [repr(use.at), "" if exat is None else str(exat)]
                    await self._touch(keys=[self._key("use", use.key)], args=args, client=pipe)
                await pipe.execute()

        await self._run(write)

    async def last_used(self, key: str) -> float | None:
        raw = await self._run(lambda: self._client.get(self._key("use", key)))
        return float(raw) if raw is not None else None

    async def revoke(self, kind: RevocationKind, value: str, at: float, until: float | None = None) -> None:
        """The revocation and its notice to every replica, in one MULTI/EXEC: never one without the other."""

        async def write() -> None:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.set(self._key("revoked", kind, value), repr(at), exat=_exat(until))
                pipe.publish(self._notices, notice_text(kind, value, at))
                await pipe.execute()

        await self._run(write)

    async def revoked_at(self, kind: RevocationKind, value: str, now: float) -> float | None:
        raw = await self._run(lambda: self._client.get(self._key("revoked", kind, value)))
        return float(raw) if raw is not None else None

    async def revocations(self, items: Sequence[tuple[RevocationKind, str]], now: float) -> list[float | None]:
        if not items:
            return []
        raws = await self._run(lambda: self._client.mget([self._key("revoked", kind, value) for kind, value in items]))
        return [float(raw) if raw is not None else None for raw in raws]

    async def signing_keys(self, now: float) -> list[SigningKeyRecord]:
        async def read() -> list[dict[bytes, bytes]]:
            async with self._client.pipeline(transaction=True) as pipe:  # one consistent view of both hashes
                pipe.hgetall(self._signing_key_names[0])
                pipe.hgetall(self._signing_key_names[1])
                return list(await pipe.execute())

        materials, retirements = await self._run(read)
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
        added = await self._run(
            lambda: self._add_first_signing_key(keys=self._signing_key_names, args=[key.kid, key.material_json()])
        )
        return bool(added)

    async def rotate_signing_key(self, key: SigningKeyRecord, usable_until: float) -> None:
        args = [key.kid, key.material_json(), repr(float(key.created_at)), repr(float(usable_until))]
        await self._run(lambda: self._rotate_signing_key(keys=self._signing_key_names, args=args))

    def _record_keys(self, kind: str, key: str) -> list[str]:
        return [self._key("record", kind, key), self._key("records", kind)]

    async def put_record(self, kind: str, key: str, value: str, expires_at: float | None = None) -> None:
        args = _record_args(key, value, expires_at)
        await self._run(lambda: self._put_record(keys=self._record_keys(kind, key), args=args))

    async def add_record(self, kind: str, key: str, value: str, now: float, expires_at: float | None = None) -> bool:
        args = [*_record_args(key, value, expires_at), repr(float(now))]
        return bool(await self._run(lambda: self._add_record(keys=self._record_keys(kind, key), args=args)))

    async def get_record(self, kind: str, key: str, now: float) -> str | None:
        return _live_record(await self._run(lambda: self._client.get(self._key("record", kind, key))), now)

    async def list_records(self, kind: str, now: float) -> list[tuple[str, str]]:
        async def read() -> tuple[list[str], list[bytes | str | None]]:
            members = await self._client.zrangebyscore(self._key("records", kind), f"({now!r}", "+inf")
            keys = [member.decode() if isinstance(member, bytes) else str(member) for member in members]
            raws = await self._client.mget([self._key("record", kind, key) for key in keys]) if keys else []
            return keys, raws

        keys, raws = await self._run(read)
        found = [(key, _live_record(raw, now)) for key, raw in zip(keys, raws)]
        return sorted((key, value) for key, value in found if value is not None)

    async def delete_record(self, kind: str, key: str) -> bool:
        record, index = self._record_keys(kind, key)

        async def delete() -> int:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(record)
                pipe.zrem(index, key)
                removed, _ = await pipe.execute()
                return int(removed)

        return bool(await self._run(delete))

    async def take_record(self, kind: str, key: str, now: float) -> str | None:
        raw = await self._run(lambda: self._take_record(keys=self._record_keys(kind, key), args=[key]))
        return _live_record(raw, now)

    async def rate_limit(self, checks: Sequence[RateCheck], now: float) -> RateVerdict:
        arguments: list[str] = [repr(now)]
        for check in checks:
            arguments += [repr(check.interval), str(check.capacity)]
        keys = [self._rate_prefix + c.key for c in checks]
        answer = await self._run(lambda: self._rate_batches.call(keys, arguments))
        read = [float(raw) if raw not in (b"", "") else None for raw in answer[1:]]
        verdict, _ = apply(read, checks, now)
        return verdict if verdict.allowed == (int(answer[0]) == 1) else RateVerdict(int(answer[0]) == 1, verdict.states)

    async def reserve_rate(self, check: RateCheck, most: int, now: float) -> RateGrant:
        """One script call for up to ``most`` units; the grant worked out from the TAT Redis read, its count Redis's."""
        arguments = [repr(now), repr(check.interval), str(check.capacity), str(most)]
        answer = await self._run(lambda: self._reserve_batches.call([self._rate_prefix + check.key], arguments))
        read = float(answer[1]) if answer[1] not in (b"", "") else None
        return granted_units(read, check, int(answer[0]), now)[1]

    def local_rates(self) -> None:
        return None  # budgets are shared through Redis: every check is a round trip

    async def ping(self) -> None:
        """On connections of its own: answers whether Redis is reachable, however busy the main pool is."""
        await self._run(self._pinger.ping)

    async def close(self) -> None:
        await self._listener.close()
        await self._rate_batches.close()
        await self._reserve_batches.close()
        await self._clients.aclose()


def _record_args(key: str, value: str, expires_at: float | None) -> list[str]:
    """The ARGV[1..4] of the record scripts: key, "expires_at|value", EXAT seconds, index score."""
    exat = _exat(expires_at)
    stored = ("" if expires_at is None else repr(float(expires_at))) + "|" + value
    score = "+inf" if expires_at is None else repr(float(expires_at))
    return [key, stored, "" if exat is None else str(exat), score]


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
