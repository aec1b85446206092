"""The seam between forwarding and the HTTP client that talks to appliances.

Forwarding code only knows :class:`UpstreamTransport`: send one request, get a
status, headers and a body stream.  The aiohttp implementation below can be
swapped for a faster one without touching policy or forwarding code.  Foreign
exceptions are mapped to :class:`UpstreamError` here, at the boundary, and
nowhere else.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from proxy.config import Upstream
from proxy.errors import LabgateError
from proxy.reasons import Reason
from proxy.upstream_address import unreachable_detail

CHUNK_SIZE = 64 * 1024


@dataclass(slots=True)
class OutboundRequest:
    """A checked request on its way to the appliance.

    ``target`` is the request-target exactly as sent: the upstream's base path
    plus the raw path and query the policy decided on.  Not frozen: one is made
    for every request, and a frozen dataclass's ``__init__`` costs three times
    as much (nothing changes it after it is built).
    """

    method: str
    target: str
    headers: Sequence[tuple[str, str]]  # in order, never framing: the transport frames the body itself
    body: AsyncIterator[bytes] | None
    body_length: int | None = None  # the body's exact length when known (else it goes chunked)
    # Sent as ``X-Request-ID`` after ``headers``: the one part of a repeated request that changes every time,
    # kept apart so the rest of its head can be built once (``http1``) and the headers list shared.
    request_id: str | None = None


class UpstreamResponse(Protocol):
    status: int

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        """The answer's headers, to look up by name."""
        ...

    @property
    def header_pairs(self) -> list[tuple[str, str]]:
        """The same headers in order, as received: what is passed on to the client."""
        ...

    def body(self) -> AsyncIterator[bytes]:
        """The body as it arrives, in chunks of at most CHUNK_SIZE."""
        ...

    async def read(self) -> bytes:
        """The whole body at once: only for answers known to be small."""
        ...

    def release(self) -> None:
        """Give the connection back to the pool (or close it); always called."""
        ...


class UpstreamTransport(Protocol):
    async def send(self, request: OutboundRequest) -> UpstreamResponse:
        """Send the request; the caller must ``release()`` the response."""
        ...

    async def close(self) -> None: ...


class UpstreamError(LabgateError):
    """The appliance could not be reached or did not answer in time.

    What a node pool may do next (:mod:`proxy.gateway.nodepool`): ``nothing_sent``, the
    connection never opened, so not a byte reached the appliance; ``resend_safe``, the
    connection broke before any answer on a bodiless idempotent request (the rule the
    ``http1`` transport resends a stale keep-alive request by).  A timeout after sending
    is neither: the appliance may be working on the request.
    """

    def __init__(self, reason: Reason, detail: str, *, nothing_sent: bool = False, resend_safe: bool = False) -> None:
        super().__init__(detail, reason)
        self.nothing_sent = nothing_sent
        self.resend_safe = resend_safe or nothing_sent


class ClientBodyError(LabgateError):
    """The client's side of the exchange failed while its body was being sent upstream.

    Not an appliance failure: it must never count as one (``upstream_unreachable``
    and ``labgate_upstream_errors_total`` are what the shipped alerts fire on).
    ``reason`` is ``client_aborted``, ``body_timeout`` or ``body_too_large``.
    """

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail, reason)


def client_side_cause(exc: BaseException) -> ClientBodyError | None:
    """The client's own failure behind an HTTP client's exception, if that is what it was.

    aiohttp wraps an exception raised by the request body it was streaming in its own
    connection error (as ``__cause__``); this looks a few links down that chain.
    """
    seen: BaseException | None = exc
    for _ in range(4):
        if seen is None:
            return None
        if isinstance(seen, ClientBodyError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


class _AiohttpResponse:
    def __init__(self, response: aiohttp.ClientResponse, name: str) -> None:
        self._response = response
        self._name = name
        self.status = response.status
        self.headers = response.headers
        self.header_pairs = list(response.headers.items())

    async def body(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(CHUNK_SIZE):
                yield chunk
        except _FOREIGN_ERRORS as exc:
            raise upstream_error(self._name, exc) from exc

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except _FOREIGN_ERRORS as exc:
            raise upstream_error(self._name, exc) from exc

    def release(self) -> None:
        self._response.release()


_FOREIGN_ERRORS = (asyncio.TimeoutError, aiohttp.ClientError, OSError)


def upstream_error(name: str, exc: BaseException) -> UpstreamError:
    """aiohttp's and the OS's exceptions become :class:`UpstreamError`, here and only here."""
    if isinstance(exc, (asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return UpstreamError(Reason.UPSTREAM_TIMEOUT, f"upstream {name!r} did not answer in time")
    return UpstreamError(Reason.UPSTREAM_UNREACHABLE, unreachable_detail(name, exc))


def client_ssl(upstream: Upstream) -> ssl.SSLContext | bool:
    """Verify by default; ``verify: false`` only for self-signed lab gear."""
    if upstream.url.scheme != "https":
        return True
    if not upstream.tls.verify:
        return False
    context = ssl.create_default_context(cafile=str(upstream.tls.ca_file) if upstream.tls.ca_file else None)
    if upstream.tls.client_cert and upstream.tls.client_key:
        context.load_cert_chain(str(upstream.tls.client_cert), str(upstream.tls.client_key))
    return context


class AiohttpTransport:
    """One pooled ``ClientSession`` per upstream.

    Bodies pass as raw bytes both ways (``auto_decompress=False``) so
    ``Content-Length`` and ``Content-Encoding`` stay true; redirects are never
    followed (a redirect would take the request somewhere no policy decided on); aiohttp adds no headers of its own.
    """

    def __init__(self, upstream: Upstream) -> None:
        self._name = upstream.name
        self._origin = str(upstream.url.origin())
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=client_ssl(upstream), limit=256),
            timeout=aiohttp.ClientTimeout(
                total=None, connect=upstream.connect_timeout, sock_read=upstream.read_timeout
            ),
            auto_decompress=False,
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )
        # aiohttp resends an idempotent request once when its connection breaks, on a fresh
        # connection too and with a replayable body; labgate sends a request at most once
        # unless resending is provably safe, which this client cannot tell, so it never
        # resends (the ``http1`` transport does, for a stale keep-alive connection only).
        # aiohttp has no public switch for it; tests/gateway/test_sent_once.py fails if it renames this one.
        self._session._retry_connection = False

    async def send(self, request: OutboundRequest) -> UpstreamResponse:
        headers = CIMultiDict(request.headers)
        if request.request_id is not None:
            headers["X-Request-ID"] = request.request_id
        if request.body is not None and request.body_length is not None:
            headers["Content-Length"] = str(request.body_length)
        try:
            response = await self._session.request(
                request.method,
                # encoded=True: the checked bytes as they are (yarl drops a bare trailing '?').
                URL(self._origin + request.target, encoded=True),
                headers=headers,
                data=request.body,
                allow_redirects=False,
                compress=None,
                chunked=None,
            )
        except _FOREIGN_ERRORS as exc:
            client_failure = client_side_cause(exc)
            if client_failure is not None:
                raise client_failure from None
            error = upstream_error(self._name, exc)
            # aiohttp raises these before a connection exists: nothing was sent.
            error.nothing_sent = error.resend_safe = isinstance(exc, (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError))
            raise error from exc
        return _AiohttpResponse(response, self._name)

    async def close(self) -> None:
        await self._session.close()
