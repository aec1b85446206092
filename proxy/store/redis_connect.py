"""How labgate connects to Redis: one primary by URL, or whichever primary Sentinel names.

The pool is bounded and *blocking*: when every connection is busy, a call
waits (at most the store timeout) for one to come back instead of failing at
once, so a burst of requests queues briefly rather than being told the store
is down.  Idle connections are pinged before reuse once they have sat for
``HEALTH_CHECK_INTERVAL`` seconds, and a connection that fails is dropped and
reopened (redis-py's retry on connection errors), so connections killed by a
Redis restart are replaced instead of failing requests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis
from redis.asyncio.connection import BlockingConnectionPool, ConnectionPool
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

HEALTH_CHECK_INTERVAL = 1  # seconds a pooled connection may sit idle before it is pinged on reuse
PING_CONNECTIONS = 2  # /readyz asks on connections of its own: a busy pool is not an unreachable store


@dataclass(frozen=True)
class RedisTarget:
    """Where the primary is: ``url``, or ``service_name`` as told by ``sentinels`` (host, port)."""

    url: str | None = None
    sentinels: tuple[tuple[str, int], ...] = ()
    service_name: str | None = None
    db: int = 0

    def describe(self) -> str:
        if self.url is not None:
            return _without_password(self.url)
        return f"sentinel service {self.service_name!r}"


class _BlockingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """Sentinel's primary discovery with the blocking pool's bounded wait for a free connection."""


@dataclass(frozen=True)
class RedisClients:
    """The store's client, the small one for health pings, the one revocation notices arrive on, and Sentinel's.

    The subscriber never retries or reconnects by itself: a subscription that
    dropped has missed notices, so its listener must see the failure and start
    over (:mod:`proxy.store.redis_notices`).
    """

    main: aioredis.Redis
    pinger: aioredis.Redis
    subscriber: aioredis.Redis
    sentinel: Sentinel | None = None

    async def aclose(self) -> None:
        await self.main.aclose()
        await self.pinger.aclose()
        await self.subscriber.aclose()
        if self.sentinel is not None:
            for client in self.sentinel.sentinels:
                await client.aclose()


def open_clients(target: RedisTarget, *, timeout: float, max_connections: int) -> RedisClients:
    """Clients on ``target``: connections open on first use, so an unreachable Redis is reported, not fatal."""
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "health_check_interval": HEALTH_CHECK_INTERVAL,
        "timeout": timeout,  # the longest wait for a free connection
    }
    subscriber_options = {**options, "health_check_interval": 0, "retry": Retry(NoBackoff(), 0)}
    del subscriber_options["timeout"]
    if target.url is not None:
        return RedisClients(
            aioredis.Redis.from_pool(BlockingConnectionPool.from_url(target.url, max_connections=max_connections, **options)),
            aioredis.Redis.from_pool(BlockingConnectionPool.from_url(target.url, max_connections=PING_CONNECTIONS, **options)),
            aioredis.Redis.from_pool(ConnectionPool.from_url(target.url, max_connections=PING_CONNECTIONS, **subscriber_options)),
        )
    service_name = target.service_name
    assert service_name is not None
    sentinel = Sentinel(
        list(target.sentinels), sentinel_kwargs={"socket_timeout": timeout, "socket_connect_timeout": timeout}
    )

    def primary(size: int, pool: type[SentinelConnectionPool], **settings: Any) -> aioredis.Redis:
        # master_for carries no return annotation; it builds its default redis_class, aioredis.Redis.
        client = sentinel.master_for(service_name, connection_pool_class=pool, db=target.db, max_connections=size, **settings)
        return cast(aioredis.Redis, client)

    return RedisClients(
        primary(max_connections, _BlockingSentinelPool, **options),
        primary(PING_CONNECTIONS, _BlockingSentinelPool, **options),
        primary(PING_CONNECTIONS, SentinelConnectionPool, **subscriber_options),
        sentinel,
    )


def _without_password(url: str) -> str:
    """The URL as a log line may show it: a password in it is replaced by ``***``."""
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    return f"{scheme}{sep}{credentials.partition(':')[0]}:***@{host}"
