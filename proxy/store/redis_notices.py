"""Revocation notices over Redis pub/sub: every replica learns of a revocation as it is written.

The Redis store writes each revocation and PUBLISHes its notice in one
MULTI/EXEC (:meth:`RedisStore.revoke`), so a revocation is never stored
without its notice.  Each process subscribes on a connection of its own and
hands every notice to its local view of revocations
(:mod:`proxy.tokens.revocation_view`), which then answers requests without a
round trip.

Pub/sub delivers nothing that was published while a subscriber was away, so
the view may only be trusted while the channel is up *and* caught up.  A
heartbeat proves both: every ``HEARTBEAT_INTERVAL`` this process PUBLISHes a
sequence number on a channel only it listens to.  Redis runs commands one at a
time and writes a subscriber's messages in that order, so once heartbeat *n*
comes back, every notice published before Redis ran heartbeat *n*'s PUBLISH has
been handled.  :meth:`fresh` is therefore true while the last heartbeat that
came back was sent at most ``bound`` seconds ago; otherwise callers ask Redis
itself.  A revocation is thus enforced by every replica within ``bound`` of
its write, and usually within one pub/sub delivery.

Whenever notices may have been missed (the connection dropped or reconnected,
the server forgot the subscription, a notice could not be read), consumers are
told to reset: their view is dropped whole and rebuilt from Redis.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from proxy.store.base import REVOCATION_KINDS, RevocationNotice, StoreUnavailable

logger = logging.getLogger("labgate")

HEARTBEAT_INTERVAL = 0.05  # seconds between two heartbeats of one process
FRESH_BOUND = 0.25  # the view is trusted while its last returned heartbeat is at most this old
RESUBSCRIBE_AFTER = 2.0  # no heartbeat back for this long: the subscription is rebuilt
RETRY_DELAY = 0.2  # seconds between two attempts to subscribe while Redis is away
_KEPT_HEARTBEATS = 1024  # send times of heartbeats not yet back (bounded)


def notice_text(kind: str, value: str, at: float) -> str:
    """What :meth:`RedisStore.revoke` publishes: the same revocation it stores."""
    return json.dumps({"kind": kind, "value": value, "at": at}, separators=(",", ":"))


def parse_notice(raw: bytes | str) -> RevocationNotice | None:
    """The notice, or None when the text is not one (then the view must be dropped: it may have missed it)."""
    try:
        fields = json.loads(raw)
        kind, value, at = fields["kind"], fields["value"], fields["at"]
    except (ValueError, TypeError, KeyError):
        return None
    if kind not in REVOCATION_KINDS or not isinstance(value, str) or not isinstance(at, (int, float)):
        return None
    return RevocationNotice(kind, value, float(at))


class NoticesLost(StoreUnavailable):
    """The subscription can no longer be trusted (notices may have been missed): it is rebuilt."""


class RevocationListener:
    """One process's subscription to revocation notices (a :class:`proxy.store.base.RevocationFeed`)."""

    def __init__(
        self,
        subscriber: aioredis.Redis,
        publisher: aioredis.Redis,
        channel: str,
        *,
        timeout: float,
        bound: float = FRESH_BOUND,
        heartbeat: float = HEARTBEAT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.bound = bound
        self._subscriber, self._publisher, self._timeout = subscriber, publisher, timeout
        self._channel = channel.encode()
        self._heartbeat_channel = f"{channel}:heartbeat:{uuid.uuid4().hex}".encode()
        self._interval, self._clock = heartbeat, clock
        self._consumers: list[tuple[Callable[[RevocationNotice], None], Callable[[], None]]] = []
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._up = False
        self._up_at = 0.0
        self._echoed = float("-inf")  # when the last heartbeat that came back was sent
        self._sent: dict[int, float] = {}
        self._sequence = 0
        self._watchers: list[Callable[[bool], None]] = []

    def attach(self, on_notice: Callable[[RevocationNotice], None], on_reset: Callable[[], None]) -> None:
        self._consumers.append((on_notice, on_reset))

    def start(self) -> None:
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="labgate-revocation-notices")

    def subscribed(self) -> bool:
        return self._up

    def fresh(self) -> bool:
        return self._up and self._clock() - self._echoed <= self.bound

    def watch(self, on_change: Callable[[bool], None]) -> None:
        self._watchers.append(on_change)
        on_change(self.fresh())

    def _report(self) -> None:
        """Tell the watchers what :meth:`fresh` says: on every heartbeat sent or echoed, and when up or down.

        Told every time rather than on a change only, so that a gauge another listener
        last set (a store replaced at a reload, closing after the new one came up) is
        right again within one heartbeat.
        """
        fresh = self.fresh()
        for on_change in self._watchers:
            on_change(fresh)

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._went_down(None)

    async def _run(self) -> None:
        """Subscribe, listen and beat; after any failure reset every view and subscribe again."""
        while True:
            try:
                await self._session()
            except Exception as exc:  # whatever ended it (Redis away, a bad message): reset and subscribe again
                self._went_down(f"{type(exc).__name__}: {exc}")
            await asyncio.sleep(RETRY_DELAY)

    async def _session(self) -> None:
        pubsub = self._subscriber.pubsub()
        try:
            async with asyncio.timeout(self._timeout):
                await pubsub.subscribe(self._channel, self._heartbeat_channel)
                await _confirmed(pubsub, 2)
            assert pubsub.connection is not None
            pubsub.connection.register_connect_callback(self._reconnected)
            self._came_up()
            reader = asyncio.create_task(self._read(pubsub))
            beater = asyncio.create_task(self._beat())
            try:
                done, _ = await asyncio.wait((reader, beater), return_when=asyncio.FIRST_EXCEPTION)
                for task in done:
                    task.result()  # raises what ended the session
            finally:
                for task in (reader, beater):
                    task.cancel()
                await asyncio.gather(reader, beater, return_exceptions=True)
        finally:
            await pubsub.aclose()

    async def _read(self, pubsub: PubSub) -> None:
        while True:
            message = await pubsub.get_message(timeout=None)
            if message is not None:
                self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        kind, channel, data = message["type"], message["channel"], message["data"]
        if kind in ("unsubscribe", "punsubscribe", "sunsubscribe"):
            raise NoticesLost("unsubscribed")
        if kind != "message":
            return
        if channel == self._heartbeat_channel:
            sent = self._sent.pop(int(data), None) if data.isdigit() else None
            if sent is not None:
                self._echoed = max(self._echoed, sent)
                self._report()
            return
        notice = parse_notice(data)
        for on_notice, on_reset in self._consumers:
            if notice is None:
                on_reset()
            else:
                on_notice(notice)

    async def _beat(self) -> None:
        """Publish a heartbeat every interval; a subscription that stops echoing is rebuilt."""
        while True:
            now = self._clock()
            if not self._up or now - max(self._echoed, self._up_at) > RESUBSCRIBE_AFTER:
                raise NoticesLost(f"no heartbeat back for {RESUBSCRIBE_AFTER:g} s")
            self._sequence += 1
            if len(self._sent) >= _KEPT_HEARTBEATS:
                self._sent.clear()
            self._sent[self._sequence] = now
            try:
                async with asyncio.timeout(self._timeout):
                    receivers = await self._publisher.publish(self._heartbeat_channel, str(self._sequence))
            except (RedisError, OSError):
                receivers = None  # Redis busy or away: the heartbeat stays unechoed and the view goes stale
            if receivers == 0:
                raise NoticesLost("Redis no longer has this process's subscription")
            self._report()  # a heartbeat late past the bound makes the view stale
            await asyncio.sleep(self._interval)

    def _came_up(self) -> None:
        self._sent.clear()
        self._echoed, self._up_at, self._up = float("-inf"), self._clock(), True
        for _, on_reset in self._consumers:
            on_reset()  # notices written while away are lost: drop what was known
        self._report()
        logger.info("revocation notices: subscribed")

    def _went_down(self, cause: str | None) -> None:
        was_up, self._up = self._up, False
        for _, on_reset in self._consumers:
            on_reset()
        self._report()
        if was_up and cause is not None:
            logger.warning("revocation notices: channel lost (%s); revocations are read from Redis until it is back", cause)

    def _reconnected(self, _connection: object) -> None:
        """The client reconnected the subscription under us: whatever was published meanwhile is lost."""
        self._went_down("the connection was re-established")


async def _confirmed(pubsub: PubSub, channels: int) -> None:
    """Wait until Redis has confirmed every subscription: from then on, every notice reaches us."""
    confirmed = 0
    while confirmed < channels:
        message = await pubsub.get_message(timeout=None)
        if message is not None and message["type"] == "subscribe":
            confirmed += 1
