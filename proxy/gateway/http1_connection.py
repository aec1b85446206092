"""One keep-alive HTTP/1.1 connection to an appliance, its answer framed by httptools (llhttp).

The protocol side of :mod:`proxy.gateway.http1`: bytes in, an answer's head,
body chunks and end out, with flow control both ways.  A connection that
receives bytes nobody asked for is never trusted again.
"""

from __future__ import annotations

import asyncio
import collections

import httptools

# Bytes buffered from the appliance before reading from it pauses.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
_BODY_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
_BODY_FRAMING_LENGTHS = frozenset(len(name) for name in _BODY_FRAMING)


class Exchange:
    """What one response on a connection has delivered so far."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.head = loop.create_future()
        self.headers: list[tuple[str, str]] = []
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.complete = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.received_any = False
        self.framed = False  # a Content-Length or Transfer-Encoding header came with the answer
        self.until_close = False  # no Content-Length, not chunked: the body ends with the connection


class Connection(asyncio.Protocol):
    """One keep-alive connection to the appliance."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self._parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.closed = False
        self.reusable = True
        self._writable: asyncio.Future[None] | None = None
        self.reused = False

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # Bytes nobody asked for: this connection can no longer be trusted.
            self.reusable = False
            self.close()
            return
        exchange.received_any = True
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        exchange = self.exchange
        if exchange is not None and not exchange.complete:
            if exc is None and exchange.until_close and exchange.head.done():
                exchange.complete = True  # the end of a close-delimited body
                self._wake()
            else:
                self._fail(exc or ConnectionResetError("the appliance closed the connection"))
        if self._writable is not None and not self._writable.done():
            self._writable.set_exception(ConnectionResetError("the appliance closed the connection"))

    def pause_writing(self) -> None:
        self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)
        self._writable = None

    # -- httptools callbacks ------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        exchange = self.exchange
        assert exchange is not None
        exchange.headers.append((name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")))
        if len(name) in _BODY_FRAMING_LENGTHS and name.lower() in _BODY_FRAMING:
            exchange.framed = True

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        assert exchange is not None
        status = self._parser.get_status_code()
        if status < 200 and status != 101:
            exchange.headers = []  # an interim answer (100, 103): wait for the real one
            exchange.framed = False
            return
        if not self._parser.should_keep_alive():
            self.reusable = False
        exchange.until_close = not exchange.framed
        if not exchange.head.done():
            exchange.head.set_result(status)

    def on_body(self, body: bytes) -> None:
        exchange = self.exchange
        assert exchange is not None
        exchange.chunks.append(body)
        exchange.buffered += len(body)
        if exchange.buffered > HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        exchange = self.exchange
        assert exchange is not None
        if not exchange.head.done():
            return  # the end of an interim answer
        exchange.complete = True
        self._wake()

    # -- used by the transport -----------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        self.reusable = False
        exchange = self.exchange
        if exchange is not None:
            exchange.error = exc
            if not exchange.head.done():
                exchange.head.set_exception(exc)
            self._wake()
        self.close()

    def _wake(self) -> None:
        exchange = self.exchange
        if exchange is not None and exchange.waiter is not None and not exchange.waiter.done():
            exchange.waiter.set_result(None)

    def send(self, data: bytes) -> asyncio.Future[None] | None:
        """Write now; what to await before writing more when the appliance's side is full (else None)."""
        if self.closed or self.transport is None:
            raise ConnectionResetError("the appliance closed the connection")
        self.transport.write(data)
        return self._writable

    async def write(self, data: bytes) -> None:
        full = self.send(data)
        if full is not None:
            await full

    def start(self) -> Exchange:
        self.exchange = Exchange(self._loop)
        return self.exchange

    async def next_chunk(self, timeout: float) -> bytes | None:
        """The next piece of body, or None at its end."""
        exchange = self.exchange
        assert exchange is not None
        while not exchange.chunks:
            if exchange.complete:
                return None
            if exchange.error is not None:
                raise exchange.error
            exchange.waiter = self._loop.create_future()
            async with asyncio.timeout(timeout):
                await exchange.waiter
            exchange.waiter = None
        chunk = exchange.chunks.popleft()
        exchange.buffered -= len(chunk)
        if exchange.buffered < LOW_WATER and self.transport is not None and not self.closed:
            self.transport.resume_reading()
        return chunk

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True


