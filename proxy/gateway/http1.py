"""A lean HTTP/1.1 upstream transport: keep-alive pool, streaming, parsing by httptools.

Why it exists: aiohttp's ``ClientSession`` builds a ``ClientRequest`` and a
``ClientResponse`` with cookie, auth, proxy, tracing and redirect machinery on
every request; a proxy that forwards an already checked request needs none of
it.  This transport writes the request head itself (the target and headers are
the exact ones the policy decided on), and lets httptools (llhttp, the parser
of Node.js) frame the answer.

Framing is labgate's own, never the client's: the client's ``Content-Length``
and ``Transfer-Encoding`` are dropped and replaced by what this transport
actually sends, so a request cannot smuggle a second one past the policy.
"""

from __future__ import annotations

import asyncio
import collections
import functools
import ssl
from collections.abc import AsyncIterator
from operator import itemgetter

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.config import Upstream
from proxy.gateway.http1_connection import HIGH_WATER, Connection
from proxy.gateway.slots import Slots
from proxy.gateway.transport import (
    OutboundRequest,
    UpstreamError,
    UpstreamResponse,
    client_ssl,
)
from proxy.reasons import Reason
from proxy.upstream_address import unreachable_detail

_FRAMING = frozenset({"content-length", "transfer-encoding", "host"})
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
_ONE_ANSWER = (None,)
# How often awaited answers are checked against their deadlines: every SWEEP_SHARE of the read
# timeout, at most every MAX_SWEEP_SECONDS.
SWEEP_SHARE = 0.125
MAX_SWEEP_SECONDS = 0.25
_NAME = itemgetter(0)


class _Http1Response:
    """An answer's head, and its body still on the connection until :meth:`release`.

    Made without an ``__init__`` call (``object.__new__`` and plain attribute
    stores in :meth:`Http1Transport.send`): one is made for every request.
    """

    __slots__ = ("_owner", "_connection", "status", "header_pairs", "_headers", "_head_only", "_released")

    _owner: Http1Transport
    _connection: Connection
    status: int
    header_pairs: list[tuple[str, str]]
    _headers: CIMultiDictProxy[str] | None
    _head_only: bool
    _released: bool

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """Built on first use: forwarding passes :attr:`header_pairs` on and never looks up by name."""
        if self._headers is None:
            self._headers = CIMultiDictProxy(CIMultiDict(self.header_pairs))
        return self._headers

    async def body(self) -> AsyncIterator[bytes]:
        if self._head_only:
            return
        timeout = self._owner.read_timeout
        try:
            while (chunk := await self._connection.next_chunk(timeout)) is not None:
                yield chunk
        except (TimeoutError, OSError, httptools.HttpParserError) as exc:
            self._connection.reusable = False
            raise self._owner.error(exc) from exc

    async def read(self) -> bytes:
        connection = self._connection
        if (
            not self._head_only
            and connection.head is not None  # not released yet
            and connection.complete
            and connection.error is None
            and connection.buffered <= HIGH_WATER  # reading was never paused: nothing to resume
        ):
            # The whole answer already arrived (most small API answers come in one read):
            # take it as it is, without the body stream's per-chunk awaits.
            chunks = connection.chunks
            body = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
            chunks.clear()
            connection.buffered = 0
            return body
        return b"".join([chunk async for chunk in self.body()])

    def release(self) -> None:
        """The connection back to the idle pool when its answer was read whole, else closed; the place freed.

        ``Http1Transport.give_back`` and ``Slots.give``, inline: this runs for every request.
        Once only: a second call would give the pool a place it does not have.
        """
        if self._released:
            return
        self._released = True
        owner, connection = self._owner, self._connection
        keep = (
            not owner.closing
            and not self._head_only  # llhttp cannot be told a HEAD answer has no body: never reuse after one
            and connection.reusable
            and not connection.closed
            and connection.head is not None
            and connection.complete
            and not connection.chunks
        )
        connection.head = None  # the exchange is over: any byte from now on is unasked for
        if keep:
            owner.idle.append(connection)
        else:
            connection.close()
        slots = owner.slots
        if slots.waiters:
            slots.give()
        else:
            slots.free += 1


_new_response = object.__new__


@functools.lru_cache(maxsize=256)  # a client repeats its requests; bounded, as they are client-controlled
def _head(method: str, target: str, host_line: str, headers: tuple[tuple[str, str], ...]) -> bytes:
    """The request line, ``Host`` and the outbound headers (never the client's framing): one string, encoded once.

    The target is checked ASCII; header text is what aiohttp decoded, so it encodes back byte for byte.
    """
    lines = [method, " ", target, " HTTP/1.1\r\n", host_line]
    if not _FRAMING.isdisjoint(map(str.lower, map(_NAME, headers))):
        # Never the client's framing: the transport writes it from what is actually sent.
        headers = tuple(pair for pair in headers if pair[0].lower() not in _FRAMING)
    if headers:  # joined in C, one "name: value" line per header
        lines += ("\r\n".join(map(": ".join, headers)), "\r\n")
    return "".join(lines).encode("utf-8", "surrogateescape")


class Http1Transport:
    """One keep-alive connection pool per upstream, at most ``limit`` connections."""

    def __init__(self, upstream: Upstream, *, limit: int = 256) -> None:
        self._name = upstream.name
        url = upstream.url
        self._host = url.raw_host or ""
        self._port = url.port or (443 if url.scheme == "https" else 80)
        default_port = (url.scheme == "https" and self._port == 443) or (url.scheme == "http" and self._port == 80)
        host = f"[{self._host}]" if ":" in self._host else self._host
        self._host_line = f"Host: {host if default_port else f'{host}:{self._port}'}\r\n"
        self._ssl = _ssl_context(upstream) if url.scheme == "https" else None
        self._connect_timeout = upstream.connect_timeout
        self.read_timeout = upstream.read_timeout
        # Answers awaited and their deadlines (loop time), checked by one sweep for all of them
        # rather than a timer each: a timer costs about 1.5 µs to set and cancel, an entry here 0.3.
        # An answer that does not come in time fails at most SWEEP_SHARE of read_timeout late.
        self._awaited: dict[asyncio.Future[int], float] = {}
        self._sweep_every = min(MAX_SWEEP_SECONDS, self.read_timeout * SWEEP_SHARE)
        self._sweeping: asyncio.TimerHandle | None = None
        self.idle: collections.deque[Connection] = collections.deque()  # most recently used last
        self.slots = Slots(limit)
        self.closing = False

    def error(self, exc: BaseException, **flags: bool) -> UpstreamError:  # flags: UpstreamError's nothing_sent, resend_safe
        if isinstance(exc, asyncio.TimeoutError):
            return UpstreamError(Reason.UPSTREAM_TIMEOUT, f"upstream {self._name!r} did not answer in time", **flags)
        return UpstreamError(Reason.UPSTREAM_UNREACHABLE, unreachable_detail(self._name, exc, self._host), **flags)

    async def send(self, request: OutboundRequest) -> UpstreamResponse:
        """Send once (see below), wait for the answer's head; the caller must ``release()`` the answer.

        One coroutine does it all, with the head built, the place taken, the idle
        connection picked and the exchange started inline: this runs for every
        request, and each helper would be a call (a coroutine, two) of its own.
        """
        # The request line, Host and headers as sent the last time the same ones were (see _head),
        # then the request id and framing of our own.
        head = _head(request.method, request.target, self._host_line, tuple(request.headers))
        tail = "" if request.request_id is None else f"X-Request-ID: {request.request_id}\r\n"
        chunked = False
        if request.body is not None:
            if request.body_length is not None:
                tail += f"Content-Length: {request.body_length}\r\n\r\n"
            else:
                tail += "Transfer-Encoding: chunked\r\n\r\n"
                chunked = True
        elif request.method in _BODY_METHODS:
            tail += "Content-Length: 0\r\n\r\n"
        else:
            tail += "\r\n"
        head += tail.encode("ascii")  # a request id is checked ASCII (exchange.py)

        slots = self.slots
        if slots.free > 0 and not slots.waiters:  # Slots.take_now, inline
            slots.free -= 1
        else:
            await self._wait_for_place()
        try:
            # Sent at most once, unless resending is provably safe: the request went out on a
            # reused keep-alive connection that the appliance had closed before any byte of an
            # answer came back, and its method is idempotent (RFC 9110 section 9.2.2) with no
            # body.  A timeout is never a reason to resend: the appliance may be working on it.
            for attempt in (1, 2):
                idle = self.idle
                while idle:  # the most recently used open connection (no await: most requests find one)
                    connection = idle.pop()
                    if not connection.closed:
                        connection.reused = True
                        break
                else:
                    connection = await self._connect()
                # The exchange starts: the connection's per-exchange fields, reset.
                connection.head = answered = connection.loop.create_future()
                connection.headers = []
                connection.status = 0
                connection.complete = connection.received_any = connection.framed = False
                connection.waiter = None
                connection.answers_expected[:] = _ONE_ANSWER
                try:
                    transport = connection.transport  # Connection.write, inline
                    if connection.closed or transport is None:
                        raise ConnectionResetError("the appliance closed the connection")
                    transport.write(head)
                    if connection.writable is not None:
                        await connection.writable
                    if request.body is not None:
                        await self._send_body(connection, request.body, chunked)
                    if not answered.done():
                        # A deadline for the sweep rather than ``asyncio.timeout`` or a timer of its own,
                        # awaited here rather than in a coroutine: this runs for every request.
                        # TimeoutError once read_timeout has passed (see _sweep).
                        loop = connection.loop
                        awaited = self._awaited
                        awaited[answered] = loop.time() + self.read_timeout
                        if self._sweeping is None:
                            self._sweeping = loop.call_later(self._sweep_every, self._sweep, loop)
                        try:
                            await answered
                        finally:
                            del awaited[answered]
                    status = answered.result()
                except TimeoutError as exc:  # before OSError: in Python 3.11 a TimeoutError is an OSError
                    connection.close()
                    raise self.error(exc) from exc
                except (OSError, httptools.HttpParserError) as exc:
                    connection.close()
                    if not (attempt == 1 and connection.reused and _safe_elsewhere(request, connection, exc)):
                        raise self.error(exc, resend_safe=_safe_elsewhere(request, connection, exc)) from exc
                    continue
                except BaseException:
                    connection.close()
                    raise
                response: _Http1Response = _new_response(_Http1Response)
                response._owner = self
                response._connection = connection
                response.status = status
                response.header_pairs = connection.headers
                response._headers = None
                response._head_only = request.method == "HEAD"
                response._released = False
                return response
            raise AssertionError("unreachable")  # pragma: no cover
        except BaseException:
            self.slots.give()
            raise

    async def _wait_for_place(self) -> None:
        """Every connection busy: wait, but not forever."""
        try:
            await self.slots.take(self._connect_timeout)
        except TimeoutError:  # mapped here, at the boundary: never a bare error past the transport
            raise UpstreamError(
                Reason.UPSTREAM_BUSY,
                f"every connection to upstream {self._name!r} stayed busy for {self._connect_timeout:g} s",
                nothing_sent=True,
            ) from None

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, protocol = await loop.create_connection(
                    lambda: Connection(loop),
                    self._host,
                    self._port,
                    ssl=self._ssl,
                    server_hostname=self._host if self._ssl is not None else None,
                )
        except (TimeoutError, OSError) as exc:
            raise self.error(exc, nothing_sent=True) from exc  # no connection: not a byte was sent
        return protocol

    async def _send_body(self, connection: Connection, body: AsyncIterator[bytes], chunked: bool) -> None:
        async for chunk in body:
            if not chunk:
                continue
            if chunked:
                await connection.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
            else:
                await connection.write(chunk)
        if chunked:
            await connection.write(b"0\r\n\r\n")

    def _sweep(self, loop: asyncio.AbstractEventLoop) -> None:
        """Fail every answer awaited past its deadline; sweep again while any is awaited."""
        now = loop.time()
        for answered, deadline in list(self._awaited.items()):
            if deadline <= now:
                _expire(answered)
        self._sweeping = loop.call_later(self._sweep_every, self._sweep, loop) if self._awaited else None

    async def close(self) -> None:
        self.closing = True
        if self._sweeping is not None:
            self._sweeping.cancel()
            self._sweeping = None
        while self.idle:
            self.idle.pop().close()


# RFC 9110 section 9.2.2: methods whose intended effect is the same however often they are sent.
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


def _safe_elsewhere(request: OutboundRequest, connection: Connection, exc: BaseException) -> bool:
    """Broken before any answer on a bodiless idempotent request: safe to send again, on this node or another."""
    return (
        not connection.received_any
        and request.body is None
        and request.method in IDEMPOTENT_METHODS
        and isinstance(exc, ConnectionError)  # reset or closed, not a parse error or a timeout
    )


def _expire(head: asyncio.Future[int]) -> None:
    if not head.done():
        head.set_exception(TimeoutError())


def _ssl_context(upstream: Upstream) -> ssl.SSLContext:
    setting = client_ssl(upstream)
    if isinstance(setting, ssl.SSLContext):
        return setting
    if setting is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context()
