"""One keep-alive HTTP/1.1 connection to an appliance, its answer framed by httptools (llhttp).

The protocol side of :mod:`proxy.gateway.http1`: bytes in, an answer's head,
body chunks and end out, with flow control both ways.  A connection that
receives bytes nobody asked for is never trusted again.

The exchange under way (one at a time on a connection) lives on the
connection itself rather than in an object of its own: the transport starts
one by resetting the fields marked below and setting :attr:`Connection.head`,
so a request costs no extra allocation or call.

httptools calls back for every header, at the end of the head, for every
piece of body and at the end of the answer.  Only the first two are Python
methods here; ``on_body`` is the chunks deque's own ``append`` and
``on_message_complete`` the ``clear`` of a list that :meth:`Connection.on_headers_complete`
fills, both C.  What a Python ``on_body`` and ``on_message_complete`` would do
(count the bytes buffered, pause reading past the high-water mark, mark the
answer complete, wake a body reader) :meth:`Connection.data_received` does
once per read, after the parser returns.  A small answer that arrives in one
read is parsed, stored and marked complete within that one call, and the
request's coroutine wakes once with everything.
"""

from __future__ import annotations

import asyncio
import collections
from itertools import islice

import httptools

# Bytes buffered from the appliance before reading from it pauses.
HIGH_WATER = 256 * 1024
LOW_WATER = 64 * 1024
_BODY_FRAMING = frozenset({b"content-length", b"transfer-encoding"})
_BODY_FRAMING_LENGTHS = frozenset(len(name) for name in _BODY_FRAMING)
_CLOSED = "the appliance closed the connection"


class Connection(asyncio.Protocol):
    """One keep-alive connection to the appliance, and the exchange under way on it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.reusable = True
        self.writable: asyncio.Future[None] | None = None  # set while the appliance's side is full
        self.reused = False
        # -- the exchange under way (reset by the transport when it starts one) ----------
        self.head: asyncio.Future[int] | None = None  # the answer's status; None: no exchange, bytes unasked for
        self.headers: list[tuple[str, str]] = []
        self.status = 0  # the answer's (not an interim one's) once its head is complete
        self.complete = False
        self.received_any = False
        self.framed = False  # a Content-Length or Transfer-Encoding header came with the answer
        self.waiter: asyncio.Future[None] | None = None  # a body reader waiting for more
        # -- kept consistent across exchanges (empty, zero, None on a connection put back) --
        self.chunks: collections.deque[bytes] = collections.deque()
        self.buffered = 0
        self.error: BaseException | None = None
        self.until_close = False  # no Content-Length, not chunked: the body ends with the connection
        self._unfinished: list[bool] = []  # [True] from the answer's head to its end
        # One answer per exchange, plus one per interim (1xx) answer: each answer's start takes one.
        # A start with none left raises inside the parser, so a second answer is a parse error and
        # nothing of it (headers or body) joins the first.
        self.answers_expected: list[None] = []
        # C callbacks (see the module's docstring); httptools looks them up once, below.
        self.on_body = self.chunks.append
        self.on_message_complete = self._unfinished.clear
        self.on_message_begin = self.answers_expected.pop
        self._parser = httptools.HttpResponseParser(self)

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.head is None:
            # Bytes nobody asked for: this connection can no longer be trusted.
            self.reusable = False
            self.close()
            return
        self.received_any = True
        chunks = self.chunks
        before = len(chunks)
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)
        # The work of a Python on_body and on_message_complete, once per read.
        added = len(chunks) - before
        if added:
            self.buffered += len(chunks[-1]) if added == 1 else sum(map(len, islice(reversed(chunks), added)))
            if self.buffered > HIGH_WATER and self.transport is not None:
                self.transport.pause_reading()
        if self.status and not self._unfinished:
            self.complete = True  # the answer's end came (not only an interim answer's)
        waiter = self.waiter  # a body reader waits: wake it for more body or for the end
        if waiter is not None and (added or self.complete) and not waiter.done():
            waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        head = self.head
        if head is not None and not self.complete:
            if exc is None and self.until_close and head.done():
                self.complete = True  # the end of a close-delimited body
                self._wake()
            else:
                self._fail(exc or ConnectionResetError(_CLOSED))
        if self.writable is not None and not self.writable.done():
            self.writable.set_exception(ConnectionResetError(_CLOSED))

    def pause_writing(self) -> None:
        self.writable = self.loop.create_future()

    def resume_writing(self) -> None:
        if self.writable is not None and not self.writable.done():
            self.writable.set_result(None)
        self.writable = None

    # -- httptools callbacks (only while an exchange is under way: data_received guards) --

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("utf-8", "surrogateescape"), value.decode("utf-8", "surrogateescape")))
        if len(name) in _BODY_FRAMING_LENGTHS and name.lower() in _BODY_FRAMING:
            self.framed = True

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status < 200 and status != 101:
            self.headers = []  # an interim answer (100, 103): wait for the real one
            self.framed = False
            self.answers_expected.append(None)
            return
        if not self._parser.should_keep_alive():
            self.reusable = False
        self.until_close = not self.framed
        self.status = status
        self._unfinished.append(True)  # until on_message_complete clears it
        head = self.head
        assert head is not None
        if not head.done():
            head.set_result(status)

    # -- used by the transport -----------------------------------------------------

    def _fail(self, exc: BaseException) -> None:
        self.reusable = False
        head = self.head
        if head is not None:
            self.error = exc
            if not head.done():
                head.set_exception(exc)
            self._wake()
        self.close()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def write(self, data: bytes) -> None:
        """Write, then wait while the appliance's side is full."""
        if self.closed or self.transport is None:
            raise ConnectionResetError(_CLOSED)
        self.transport.write(data)
        if self.writable is not None:
            await self.writable

    async def next_chunk(self, timeout: float) -> bytes | None:
        """The next piece of body, or None at its end."""
        while not self.chunks:
            if self.complete:
                return None
            if self.error is not None:
                raise self.error
            self.waiter = self.loop.create_future()
            async with asyncio.timeout(timeout):
                await self.waiter
            self.waiter = None
        chunk = self.chunks.popleft()
        self.buffered -= len(chunk)
        if self.buffered < LOW_WATER and self.transport is not None and not self.closed:
            self.transport.resume_reading()
        return chunk

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()
        self.closed = True
