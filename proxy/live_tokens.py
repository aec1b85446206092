"""How many distinct tokens are in use right now, in bounded memory.

Feeds the ``labgate_live_tokens{upstream,token_type}`` gauge: a token counts
from its first verified request until ``window`` seconds (10 minutes) after its
last one.  Tokens are held by fingerprint (never their text) in a
:class:`cachetools.TTLCache` of at most ``max_tokens`` entries per process
(100,000 by default, about 40 MB when full); past that bound the least recently
used are dropped early, so the gauge undercounts rather than grows without limit.

The gauge moves by ``inc``/``dec`` as tokens arrive and leave, never by a
recount, so several worker processes can sum it (``multiprocess_mode="livesum"``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from cachetools import TTLCache

LIVE_WINDOW_SECONDS = 600.0
MAX_LIVE_TOKENS = 100_000
# A token's entry is refreshed at most once per this many seconds: refreshing a
# TTLCache entry costs microseconds, and a busy client repeats its token many
# times a second.  The window is exact to within this much.
REFRESH_SECONDS = 10.0

TokenKey = tuple[str, str]  # (upstream, fingerprint)


class _CountedTTLCache(TTLCache[TokenKey, Any]):
    """A TTLCache whose values are gauge children, decremented as entries leave."""

    def expire(self, time: float | None = None) -> list[tuple[TokenKey, Any]]:
        expired: list[tuple[TokenKey, Any]] = list(super().expire(time))
        for _, child in expired:
            child.dec()
        return expired

    def popitem(self) -> tuple[TokenKey, Any]:
        key, child = super().popitem()  # the least recently used, when full
        child.dec()
        return key, child


class LiveTokens:
    """Distinct tokens per (upstream, token type) seen within the last ``window`` seconds."""

    def __init__(
        self,
        gauge: Any,
        *,
        window: float = LIVE_WINDOW_SECONDS,
        max_tokens: int = MAX_LIVE_TOKENS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._gauge = gauge
        self._clock = clock
        self._tokens = _CountedTTLCache(maxsize=max_tokens, ttl=window, timer=clock)
        self._max_tokens = max_tokens
        self._children: dict[tuple[str, str], Any] = {}
        # Keys refreshed since ``_recent_until - REFRESH_SECONDS``: skipped until then.
        self._recent: set[TokenKey] = set()
        self._recent_until = 0.0
        self._sweep: asyncio.TimerHandle | None = None

    def seen(self, upstream: str, token_type: str, fingerprint: str) -> None:
        """A request carried this verified token (``fingerprint``: its sha256, never the token)."""
        key = (upstream, fingerprint)
        now = self._clock()
        if now >= self._recent_until:
            self._recent.clear()
            self._recent_until = now + REFRESH_SECONDS
        elif key in self._recent:
            return
        if len(self._recent) >= self._max_tokens:
            self._recent.clear()
        self._recent.add(key)
        child = self._children.get((upstream, token_type))
        if child is None:
            child = self._children[(upstream, token_type)] = self._gauge.labels(upstream, token_type)
        previous = self._tokens.get(key)
        if previous is not child:
            if previous is not None:
                previous.dec()  # the same token under another type (the config changed)
            child.inc()
        self._tokens[key] = child
        self._arm_sweep()

    def expire(self) -> None:
        """Drop tokens unused for ``window`` seconds from the gauge."""
        self._tokens.expire()

    def __len__(self) -> int:
        self.expire()
        return len(self._tokens)

    def _arm_sweep(self) -> None:
        """Expire on a timer while tokens are held.

        Requests and scrapes expire entries too, but with several workers a
        scrape reads every worker's gauge, and a worker that serves nothing for
        a while would otherwise keep counting tokens long gone.
        """
        if self._sweep is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # used outside an event loop (tests, tools): scrapes still expire
        self._sweep = loop.call_later(REFRESH_SECONDS, self._swept)

    def _swept(self) -> None:
        self._sweep = None
        self.expire()
        if len(self._tokens):
            self._arm_sweep()
