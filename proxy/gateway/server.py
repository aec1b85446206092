"""Serving the gateway: aiohttp's HTTP server with labgate's guards around it.

Two things aiohttp does not do on its own:

* parse errors become labgate's JSON error bodies (431 for oversized headers),
  and are logged by type only — aiohttp's own message quotes the offending
  line, which may be an ``Authorization`` header;
* a deadline for a client to finish sending request headers (slowloris: with
  default settings such a connection stays open for at least 30 seconds);
* a drain deadline at shutdown: aiohttp waits its ``shutdown_timeout`` once for
  requests in flight and then again after cancelling them, and a timeout of 0
  means no limit at all; labgate waits ``shutdown.drain_seconds`` itself,
  then lets aiohttp cut what is left (each cut request gets a decision-log
  line, reason ``shutdown_cut``) and exits within a second of the deadline.

SIGHUP reloads the config (:mod:`proxy.gateway.reload`); SIGTERM and SIGINT
stop accepting, drain and close upstream pools and the store.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
import ssl
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage, LineTooLong
from aiohttp.web_protocol import RequestHandler

from proxy.config import Config
from proxy.gateway.errors import error_body, error_response
from proxy.gateway.in_flight import InFlight
from proxy.gateway.reload import ReloadingGateway
from proxy.reasons import Reason

logger = logging.getLogger("labgate")

_REASON_PHRASES = {431: "Request Header Fields Too Large", 503: "Service Unavailable"}


class GuardedRequestHandler(RequestHandler):
    """aiohttp's connection handler plus a header deadline, bounds on what an unknown client holds, JSON parse errors.

    Before a request head is complete nobody is authenticated, so what such a
    connection may hold is bounded: at most ``max_header_block`` bytes of head
    (aiohttp bounds each line, not their sum) and at most ``max_connections``
    connections at once.  Memory held by unauthenticated clients is therefore at
    most ``max_connections`` x (``max_header_block`` + one socket read).
    """

    header_timeout: float = 10.0
    max_header_block: int = 65536
    max_connections: int = 1024
    refusals: RefusalWarnings

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head_bytes = 0
        self._last_payload: Any = None
        manager = self._manager
        assert manager is not None  # aiohttp sets it before connection_made and clears it only when the connection is lost
        if len(manager.connections) > self.max_connections:
            self.refusals.refused(len(manager.connections) - 1)
            self._refuse_raw(Reason.TOO_MANY_CONNECTIONS, "too many connections; try again shortly")
            return
        self._arm_header_deadline()

    def data_received(self, data: bytes) -> None:
        """Count the bytes of a request head still being received; 431 past the block limit."""
        in_head = self._last_payload is None or self._last_payload.is_eof()
        seen = self._request_count
        super().data_received(data)
        if self._request_count != seen:
            self._head_bytes = 0  # a head completed
            if self._messages:
                self._last_payload = self._messages[-1][1]
            return
        if in_head:  # a body that ends mid-chunk leaves the next head uncounted for one read at most
            self._head_bytes += len(data)
            if self._head_bytes > self.max_header_block:
                logger.info("refused a request head larger than %d bytes (headers_too_large)", self.max_header_block)
                if self._request_in_progress or self._messages:
                    # Pipelined behind a request still being answered: bytes written now would be read
                    # as that request's answer.  Read no more; close once the requests in hand are answered.
                    self.close()
                    return
                self._refuse_raw(Reason.HEADERS_TOO_LARGE, "the request headers are too large in total")

    def _refuse_raw(self, reason: Reason, detail: str) -> None:
        """Answer outside any request (none was parsed) and close once it is written."""
        if self.transport is None or self._force_close:
            return
        if self._current_request is not None:  # an answer is being written: no room for ours
            self._force_close = True
            self.transport.close()
            return
        body = json.dumps(error_body(reason, detail, "-")).encode()
        head = (
            f"HTTP/1.1 {reason.status} {_REASON_PHRASES.get(reason.status, 'Error')}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nCache-Control: no-store\r\n"
            "Connection: close\r\n\r\n"
        ).encode("ascii")
        self.transport.write(head + body)
        self._force_close = True
        self.transport.close()

    def _arm_header_deadline(self) -> None:
        loop = asyncio.get_running_loop()
        seen = self._request_count
        self._header_deadline = loop.call_later(self.header_timeout, self._check_header_deadline, seen)

    def _check_header_deadline(self, seen: int) -> None:
        """Close a connection that sent no complete request head within the deadline.

        A connection busy with a request (a long upload or download) is left
        alone; the deadline is checked again for the next request on it.
        """
        if self.transport is None:
            return
        if self._request_count == seen and self._current_request is None and not self._messages:
            logger.info("closing a connection that sent no complete request within %.0fs", self.header_timeout)
            self.transport.close()
            return
        self._arm_header_deadline()

    def connection_lost(self, exc: BaseException | None) -> None:
        deadline = getattr(self, "_header_deadline", None)
        if deadline is not None:
            deadline.cancel()
        super().connection_lost(exc)

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if request.writer.output_size > 0:
            raise ConnectionError("response already started; cannot send an error")
        if isinstance(exc, LineTooLong):
            reason, detail = Reason.HEADERS_TOO_LARGE, "the request line or a header is too large"
        elif isinstance(exc, BadHttpMessage):
            reason, detail = Reason.BAD_REQUEST, "malformed HTTP request"
        else:
            # A bug of ours, not a client's bad bytes: keep the traceback.
            logger.error("internal error while handling a request", exc_info=exc)
            reason, detail = Reason.INTERNAL_ERROR, "internal error"
        # Log by type only: aiohttp's messages quote raw request bytes.
        logger.info("refused a request at the HTTP layer: %s (%s)", type(exc).__name__ if exc else status, reason.code)
        response = error_response(reason, detail, "-")
        response.force_close()
        return response


class RefusalWarnings:
    """Connections refused past ``limits.max_connections``, warned about at most once per interval.

    A flood of connections must not become a flood of log lines.
    """

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self._last = float("-inf")
        self._since = 0

    def refused(self, open_connections: int) -> None:
        self._since += 1
        now = time.monotonic()
        if now - self._last < self.interval:
            return
        logger.warning(
            "refused %d connection(s) past limits.max_connections (%d open)", self._since, open_connections
        )
        self._last, self._since = now, 0


class GuardedServer(web.Server):
    def __init__(self, *args: Any, header_timeout: float, max_header_block: int, max_connections: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timeout = header_timeout
        self._max_header_block = max_header_block
        self._max_connections = max_connections
        self._refusals = RefusalWarnings()

    def __call__(self) -> RequestHandler:
        handler = GuardedRequestHandler(self, loop=self._loop, **self._kwargs)
        handler.header_timeout = self._header_timeout
        handler.max_header_block = self._max_header_block
        handler.max_connections = self._max_connections
        handler.refusals = self._refusals
        return handler


class Served(Protocol):
    """What a runner serves: a :class:`Gateway`, or the :class:`ReloadingGateway` around versions of one."""

    @property
    def config(self) -> Config: ...

    async def start(self) -> None: ...

    def handle(self, request: web.BaseRequest) -> Awaitable[web.StreamResponse]: ...

    def serving(self) -> tuple[Callable[[web.BaseRequest], Awaitable[web.StreamResponse]], Callable[[], None]]:
        """The handler for a request arriving now, and what to call once it is answered."""
        ...

    async def close(self) -> None: ...


# After the drain deadline: how long aiohttp waits for a handler before and after cancelling it.
CUT_GRACE_SECONDS = 0.25
# The whole shutdown, closing upstream pools and the store included, ends this long after the drain deadline.
EXIT_GRACE_SECONDS = 0.9


class GatewayRunner(web.BaseRunner):
    """Runs a gateway on guarded connections; starts it with the runner, drains and closes it at cleanup.

    Cleanup order (aiohttp's, with labgate's drain in ``shutdown``): the listening
    sockets close, idle keep-alive connections close, requests in flight get up
    to ``shutdown.drain_seconds`` to finish, what is left is cut, then the gateway
    closes its upstream pools and the store.
    """

    def __init__(
        self, gateway: Served, *, header_timeout: float, max_header_block: int, max_connections: int, **kwargs: Any
    ) -> None:
        super().__init__(handle_signals=False, shutdown_timeout=CUT_GRACE_SECONDS)
        self.gateway = gateway
        self.in_flight = InFlight(lambda: gateway.config.decision_log)
        self._closing_by: float | None = None  # loop time the whole shutdown must end by
        self._header_timeout = header_timeout
        self._max_header_block = max_header_block
        self._max_connections = max_connections
        self._server_kwargs = kwargs

    async def _make_server(self) -> web.Server:
        await self.gateway.start()
        return GuardedServer(
            self.in_flight.counting(self.gateway.serving),
            loop=asyncio.get_running_loop(),
            header_timeout=self._header_timeout,
            max_header_block=self._max_header_block,
            max_connections=self._max_connections,
            **self._server_kwargs,
        )

    async def shutdown(self) -> None:
        """Give requests in flight until the drain deadline (read from the config now serving)."""
        deadline = self.gateway.config.shutdown.drain_seconds
        self._closing_by = asyncio.get_running_loop().time() + deadline + EXIT_GRACE_SECONDS
        if self.in_flight.count:
            logger.info("waiting up to %gs for %d requests in flight", deadline, self.in_flight.count)
        if not await self.in_flight.wait_idle(deadline):
            logger.warning("cutting %d requests still in flight after %gs", self.in_flight.count, deadline)
            self.in_flight.cutting = True  # aiohttp cancels them next; each is logged as it goes

    async def _cleanup_server(self) -> None:
        """Close upstream pools and the store, but never past the shutdown's end: the process must exit."""
        left = None if self._closing_by is None else max(0.05, self._closing_by - asyncio.get_running_loop().time())
        try:
            async with asyncio.timeout(left):
                await self.gateway.close()
        except TimeoutError:
            logger.warning("closing upstream connections and the store took over %.2fs: exiting anyway", left)


def server_ssl(config: Config) -> ssl.SSLContext | None:
    tls = config.listen.tls
    if tls is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    return context


def make_runner(gateway: Served, config: Config) -> GatewayRunner:
    limits = config.limits
    return GatewayRunner(
        gateway,
        header_timeout=limits.header_timeout,
        max_header_block=limits.max_header_block_bytes,
        max_connections=limits.max_connections,
        access_log=None,
        max_line_size=limits.max_line_bytes,
        max_field_size=limits.max_header_bytes,
        max_headers=100,
        keepalive_timeout=75.0,
        auto_decompress=False,  # bodies pass through byte for byte
    )


def c_parser_active() -> bool:
    """Production runs aiohttp's C parser: the pure-Python one accepts methods (``get``, ``FOO``) the C parser refuses."""
    from aiohttp import http_parser

    return http_parser.HttpRequestParser is not http_parser.HttpRequestParserPy


async def run_server(config: Config, *, ready: asyncio.Event | None = None, reuse_port: bool = False) -> None:
    """Serve until SIGINT or SIGTERM, reloading on SIGHUP; then drain requests in flight and close.

    ``reuse_port``: one of several workers on the same port (``labgate serve --workers``).
    """
    gateway = ReloadingGateway(config)
    runner = make_runner(gateway, config)
    await runner.setup()
    site = web.TCPSite(
        runner, config.listen.address, config.listen.port, ssl_context=server_ssl(config), reuse_port=reuse_port or None
    )
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()  # close upstream pools before reporting the listen error
        raise
    # What starting built (upstream pools, the store, aiohttp's server) lives as long as the
    # process, like the config frozen before it: out of every garbage collection from now on.
    gc.collect()
    gc.freeze()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    # Kept through the drain (reload_soon does nothing by then): without a handler SIGHUP would end the process.
    loop.add_signal_handler(signal.SIGHUP, gateway.reload_soon, "SIGHUP")
    scheme = "https" if config.listen.tls else "http"
    logger.info(
        "labgate listening on %s://%s:%s (event loop: %s)",
        scheme, config.listen.address, config.listen.port, type(loop).__module__.split(".")[0],
    )
    if ready is not None:
        ready.set()
    try:
        await stop.wait()
    finally:
        logger.info("labgate shutting down: no new connections, draining requests in flight")
        gateway.stop_reloading()
        await runner.cleanup()
        logger.info("labgate stopped: upstream connections and the store are closed")
