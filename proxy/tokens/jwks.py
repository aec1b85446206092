"""JWKS key sets fetched over HTTPS: a token source's keys, published by whoever issues its tokens.

Each published key becomes :class:`~proxy.verification_keys.VerificationKey` values
pinned to one algorithm each (:func:`~proxy.verification_keys.keys_from_jwk`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable, Sequence

import aiohttp

from proxy.verification_keys import KeysUnavailable, VerificationKey, keys_from_jwk

logger = logging.getLogger("labgate")

MAX_JWKS_BYTES = 1024 * 1024


class JwksCache:
    """A JWKS URL's keys, fetched only when needed and never more than one fetch at a time.

    * fetched on first use and again once older than ``max_age``;
    * refetched for an unknown ``kid`` (it may have just been rotated in), but
      never sooner than ``min_refetch_interval`` after the last attempt, so a
      stream of made-up kids cannot turn into a stream of fetches;
    * a fetch in flight is shared: callers that need it wait for that one (in a
      shielded task, so a caller that goes away does not cancel it for the rest);
    * a failed fetch keeps the last good keys; with none ever loaded,
      :class:`KeysUnavailable` (fail closed).
    """

    def __init__(
        self,
        url: str,
        *,
        algorithms: Sequence[str],
        min_refetch_interval: float,
        max_age: float,
        on_fetch: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        timeout: float = 5.0,
    ) -> None:
        self.url = url
        self._algorithms = tuple(algorithms)
        self._min_interval = min_refetch_interval
        self._max_age = max_age
        self._on_fetch = on_fetch
        self._clock = clock
        self._timeout = timeout
        self._keys: list[VerificationKey] | None = None
        self._fetched_at: float | None = None  # last good fetch
        self._attempted_at: float | None = None  # last attempt, good or not
        self._inflight: asyncio.Task[None] | None = None
        self._client: aiohttp.ClientSession | None = None

    async def get(self, kid: str | None, algorithm: str) -> VerificationKey | None:
        """The key for this kid and algorithm, or None; KeysUnavailable when no key set was ever loaded."""
        if self._keys is None or self._stale():
            await self._refresh()
        found = self._find(kid, algorithm)
        if found is None and self._keys is not None:
            await self._refresh()
            found = self._find(kid, algorithm)
        if self._keys is None:
            raise KeysUnavailable(self.url)
        return found

    def _stale(self) -> bool:
        return self._fetched_at is not None and self._clock() - self._fetched_at >= self._max_age

    def _find(self, kid: str | None, algorithm: str) -> VerificationKey | None:
        candidates = [k for k in self._keys or () if k.algorithm == algorithm]
        if kid is None:
            # Without a kid only an unambiguous key set can answer.
            return candidates[0] if len(candidates) == 1 else None
        return next((k for k in candidates if k.kid == kid), None)

    async def _refresh(self) -> None:
        """Wait for the fetch in flight, or start one if the interval allows; otherwise return at once."""
        if self._inflight is None:
            if self._attempted_at is not None and self._clock() - self._attempted_at < self._min_interval:
                return
            self._attempted_at = self._clock()
            self._inflight = asyncio.create_task(self._fetch_and_keep())
        await asyncio.shield(self._inflight)

    async def _fetch_and_keep(self) -> None:
        try:
            keys = await self._fetch()
        except (TimeoutError, aiohttp.ClientError, OSError, ValueError, RecursionError) as exc:
            logger.warning("JWKS fetch from %s failed (%s); keeping the last good keys", self.url, _describe(exc))
            if self._on_fetch:
                self._on_fetch("error")
            return
        finally:
            self._inflight = None
        self._keys = keys
        self._fetched_at = self._clock()
        if self._on_fetch:
            self._on_fetch("ok")

    async def _fetch(self) -> list[VerificationKey]:
        """One GET, bounded in time and size; redirects are not followed (one could leave HTTPS)."""
        if self._client is None:
            self._client = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self._timeout))
        async with self._client.get(self.url, allow_redirects=False) as response:
            if response.status != 200:
                raise ValueError(f"status {response.status}")
            body = bytearray()
            async for chunk in response.content.iter_any():
                body += chunk
                if len(body) > MAX_JWKS_BYTES:
                    raise ValueError("key set larger than 1 MiB")
        try:
            document = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            raise ValueError("key set is not JSON") from None
        if not isinstance(document, dict) or not isinstance(document.get("keys"), list):
            raise ValueError("key set has no 'keys' list")
        keys = [k for jwk in document["keys"] if isinstance(jwk, dict) for k in keys_from_jwk(jwk, self._algorithms)]
        if not keys:
            raise ValueError("key set has no usable signing key for the pinned algorithms")
        return keys

    async def close(self) -> None:
        task = self._inflight
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._client is not None:
            await self._client.close()
            self._client = None


def _describe(exc: BaseException) -> str:
    """A short reason for the log: the exception's own text, or its type when it has none."""
    return str(exc) or type(exc).__name__
