"""Requests in flight: what a shutdown waits for, and the decision-log line of each one it cuts."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.decision_log import DecisionRecord, log_decision
from proxy.gateway.exchange import request_id_for
from proxy.reasons import Reason

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
# What serves a request arriving now, and what to call once it is answered (see ``counting``).
Serving = Callable[[], tuple[Handler, Callable[[], None]]]


class InFlight:
    """Requests being handled, so that a shutdown can wait for them to finish and log the ones it cuts."""

    def __init__(self, decision_log: Callable[[], str]) -> None:
        self.count = 0
        self.cutting = False
        self._decision_log = decision_log
        self._idle = asyncio.Event()
        self._idle.set()

    def counting(self, serving: Serving) -> Handler:
        """The one coroutine around every request: counted here, and in the config version ``serving`` picks.

        ``serving`` hands over the version's handler and its own "answered"
        callback, so the version's count needs no coroutine of its own.
        """

        async def counted(request: web.BaseRequest) -> web.StreamResponse:
            if not self.count:  # busy from now on (an Event's clear is a call: only when it changes)
                self._idle.clear()
            self.count += 1
            started = time.perf_counter()
            handler, answered = serving()
            try:
                return await handler(request)
            except asyncio.CancelledError:
                if self.cutting:
                    self._log_cut(request, started)
                raise
            finally:
                answered()
                self.count -= 1
                if self.count == 0:
                    self._idle.set()

        return counted

    def _log_cut(self, request: web.BaseRequest, started: float) -> None:
        """The decision line a cut request would otherwise never get: what the server knows of it."""
        log_decision(
            DecisionRecord(
                request_id=request_id_for(request),
                upstream=None,
                method=request.method[:16],
                path=request.raw_path.partition("?")[0][:2048],  # never the query: tokens may hide there
                rule=None,
                client_ip=None,
                peer=request.remote,
                token_type=None,
                token_hash=None,
                subject=None,
                allowed=False,
                reason=Reason.SHUTDOWN_CUT.code,
                status=Reason.SHUTDOWN_CUT.status,
                upstream_status=None,
                duration_ms=round((time.perf_counter() - started) * 1000, 3),
            ),
            self._decision_log(),
        )

    async def wait_idle(self, seconds: float) -> bool:
        """True when every request finished within ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True
