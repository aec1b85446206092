"""In-flight caps: at most ``max_in_flight`` requests at an appliance at once, the rest wait briefly.

A fragile appliance falls over from concurrency as much as from rate: a
script that opens 200 connections at once is refused politely here instead.
A request holds its place from the moment it is sent until the appliance's
answer has been passed on in full (streaming an answer keeps the appliance
busy too).  Requests beyond the cap wait, first come first served, up to the
upstream's ``queue_timeout``; then they get 503 ``upstream_busy`` with
``Retry-After``, and nothing is forwarded.  Caps are per process: each worker
and replica keeps its own (a store round trip per request and per answer
would cost more than the cap saves).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field

from proxy.errors import LabgateError
from proxy.metrics import GatewayMetrics
from proxy.reasons import Reason


class UpstreamBusy(LabgateError):
    """No place under a cap within the queue time."""

    def __init__(self, cap: str, waited: float, retry_after: int) -> None:
        super().__init__(f"{cap} is full", Reason.UPSTREAM_BUSY)
        self.cap = cap
        self.waited = waited
        self.retry_after = retry_after


@dataclass(eq=False)
class InFlightCap:
    """One cap: its places and who waits for them, in arrival order (asyncio.Semaphore is FIFO)."""

    name: str  # as a refusal names it: "upstream svt" or "token type emergency of svt"
    limit: int
    places: asyncio.Semaphore = field(init=False)
    waiting: int = 0

    def __post_init__(self) -> None:
        self.places = asyncio.Semaphore(self.limit)


class InFlightGates:
    """The caps of one gateway: per upstream, and per token type within an upstream."""

    def __init__(self, metrics: GatewayMetrics) -> None:
        self._metrics = metrics
        self._caps: dict[tuple[str, str | None], InFlightCap] = {}

    def cap(self, upstream: str, token_type: str | None, limit: int | None) -> InFlightCap | None:
        if limit is None:
            return None
        key = (upstream, token_type)
        found = self._caps.get(key)
        if found is None:
            name = f"upstream {upstream}" if token_type is None else f"token type {token_type} of {upstream}"
            found = self._caps[key] = InFlightCap(name, limit)
        return found

    @asynccontextmanager
    async def hold(self, upstream: str, caps: tuple[InFlightCap, ...], queue_timeout: float) -> AsyncIterator[None]:
        """A place under every cap (the type's, then the upstream's) for the body of the block.

        Raises :class:`UpstreamBusy` when the places could not all be had
        within ``queue_timeout`` seconds in total; a place taken is given back.
        """
        if not caps:
            yield
            return
        started = time.monotonic()
        async with AsyncExitStack() as held:
            for cap in caps:
                await self._take(upstream, cap, started + queue_timeout, started)
                held.callback(cap.places.release)
            self._metrics.queue_wait.labels(upstream).observe(time.monotonic() - started)
            gauge = self._metrics.in_flight.labels(upstream)
            gauge.inc()
            held.callback(gauge.dec)
            yield

    async def _take(self, upstream: str, cap: InFlightCap, deadline: float, started: float) -> None:
        if not cap.places.locked():
            await cap.places.acquire()  # a free place: taken without a wait
            return
        queued = self._metrics.queued.labels(upstream)
        cap.waiting += 1
        queued.inc()
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await cap.places.acquire()
        except TimeoutError:
            waited = time.monotonic() - started
            self._metrics.queue_wait.labels(upstream).observe(waited)
            # Come back when the queue ahead has had one queue time to drain.
            raise UpstreamBusy(cap.name, waited, max(1, math.ceil(deadline - started))) from None
        finally:
            cap.waiting -= 1
            queued.dec()
