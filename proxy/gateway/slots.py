"""Places on one upstream's connection pool: at most so many exchanges at once, later ones in arrival order."""

from __future__ import annotations

import asyncio
import collections


class Slots:
    """At most ``limit`` exchanges at once, later ones waiting in arrival order.

    A plain counter while there is room (every request on a healthy pool), a
    future only for a request that has to wait: cheaper than a semaphore,
    which costs a lock check and a coroutine even when free.  The transport
    takes and gives a free place with the counter itself (no call) when no
    one waits; ``take_now`` and ``give`` are the same rules as methods.
    """

    def __init__(self, limit: int) -> None:
        self.free = limit
        self.waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def take_now(self) -> bool:
        """A place now, or False when none is free (or others wait for one first)."""
        if self.free > 0 and not self.waiters:
            self.free -= 1
            return True
        return False

    async def take(self, timeout: float) -> None:
        """Wait for a place; TimeoutError after ``timeout`` seconds."""
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            async with asyncio.timeout(timeout):
                await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self.give()  # handed a place just as this request gave up: pass it on
            elif waiter in self.waiters:
                self.waiters.remove(waiter)
            raise

    def give(self) -> None:
        """A place is free: to the longest waiter, else back to the counter."""
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1
