"""Forwarding a decided request: the request the appliance receives, sent once, and its answer back.

What reaches the appliance is built from what was decided (docs/concepts/forwarding.md):
the checked raw target, the client headers its kind lets pass, the one
credential the appliance needs, and the client's body, streamed and bounded
(form bodies checked for ``_method`` first).  Whose fault a failure is decides
how it is recorded: the appliance's is an upstream error, the client's never.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from proxy.config import Config
from proxy.credentials.base import CredentialUnavailable
from proxy.gateway.client_token import reemitted
from proxy.gateway.exchange import Exchange, Routed, UpstreamRuntime
from proxy.gateway.headers import Pairs, RememberedHeads, answer_headers, header_value, outbound_headers
from proxy.gateway.inflight import InFlightCap
from proxy.gateway.protect import Busy, Protection
from proxy.gateway.recorder import Recorder
from proxy.gateway.request_shape import (
    MAX_FORM_BYTES,
    FormOverride,
    form_kind,
    multipart_boundary,
    urlencoded_overrides,
    without_multipart_override,
)
from proxy.gateway.transport import (
    ClientBodyError,
    OutboundRequest,
    UpstreamError,
    UpstreamResponse,
)
from proxy.ipaddrs import IPAddress
from proxy.policy.decide import Decision, deny
from proxy.reasons import Reason
from proxy.tokens.state import TokenStateGuard

logger = logging.getLogger("labgate")

BODY_TOO_LARGE_DETAIL = "the request body is larger than allowed"
SMALL_ANSWER_BYTES = 64 * 1024
# Outbound header lists remembered per distinct client head (bounded: heads are client-controlled).
MAX_REMEMBERED_HEADS = 256
_NO_BODY_STATUSES = frozenset({204, 304})


class Forwarder:
    """Sends decided requests to their appliances for one config version."""

    def __init__(
        self, config: Config, recorder: Recorder, token_state: TokenStateGuard, protection: Protection | None = None
    ) -> None:
        self._limits = config.limits
        self._proto = "https" if config.listen.tls else "http"
        self.recorder = recorder
        self._metrics = recorder.metrics
        self._token_state = token_state
        self.protection = protection  # rate limits and in-flight caps (docs/concepts/protecting-appliances.md)
        self._last_ip: tuple[IPAddress | None, str] = (None, "")
        self.remembered_heads = RememberedHeads(MAX_REMEMBERED_HEADS)

    def forward(self, routed: Routed, decision: Decision) -> Awaitable[web.StreamResponse]:
        """An allowed request: its body and credential prepared, then sent once; the answer, to be awaited.

        A request with neither a body to read nor labgate's own credential to fetch
        (most of them) goes straight to :meth:`send`: no coroutine of this layer.
        """
        if routed.request.body_exists or routed.runtime.credential is not None:
            return self._prepare_and_send(routed, decision)
        # No body (aiohttp: no Content-Length above 0, no chunked body): nothing to bound or read.
        return self.send(routed, self.outbound(routed, None, self._presented(routed), None), decision)

    async def _prepare_and_send(self, routed: Routed, decision: Decision) -> web.StreamResponse:
        """The body read (bounded) and labgate's credential fetched, then sent once."""
        exchange, request = routed.exchange, routed.request
        limit = self._limits.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return self.recorder.refuse(exchange, Reason.BODY_TOO_LARGE, BODY_TOO_LARGE_DETAIL, allowed=decision)
        try:
            body, length = await self._outbound_body(request, limit) if request.body_exists else (None, None)
            credential = await self._credential_for(routed) if routed.runtime.credential is not None else self._presented(routed)
        except ClientBodyError as exc:
            return self.recorder.refuse(exchange, exc.reason, exc.detail, allowed=decision)
        except CredentialUnavailable as exc:
            return self.recorder.upstream_failed(
                exchange, routed.runtime, Reason.UPSTREAM_CREDENTIAL_UNAVAILABLE, exc.detail, decision
            )
        return await self.send(routed, self.outbound(routed, body, credential, length), decision)

    async def forward_public(self, routed: Routed, rule: str) -> web.StreamResponse:
        """A route the pack declares public: forwarded with no credential at all, the client's or labgate's."""
        decision = Decision(True, Reason.ALLOWED, rule)
        if routed.target.raw_query:
            return self.recorder.refuse(
                routed.exchange, Reason.QUERY_PARAM_NOT_ALLOWED, "a public route takes no query parameters"
            )
        if self.protection is not None:
            pending = self.protection.spend(routed, decision)  # the upstream's limit only: no token type
            if pending is not None and (limited := await pending) is not None:
                return limited
        return await self.send(routed, self.outbound(routed, None, None), decision)

    def send(self, routed: Routed, outbound: OutboundRequest, decision: Decision) -> Awaitable[web.StreamResponse]:
        """Send a decided request once, under the in-flight caps when there are any; the answer, to be awaited."""
        protection = self.protection
        caps = protection.caps(routed, decision) if protection is not None and protection.capped else ()
        if not caps:
            return self._send_once(routed, outbound, decision)
        return self._send_capped(routed, outbound, decision, caps)

    async def _send_capped(
        self, routed: Routed, outbound: OutboundRequest, decision: Decision, caps: tuple[InFlightCap, ...]
    ) -> web.StreamResponse:
        assert self.protection is not None
        try:
            async with self.protection.hold(routed, decision, caps):
                return await self._send_once(routed, outbound, decision)
        except Busy as busy:
            return busy.response  # 503 upstream_busy, recorded; nothing was sent

    async def _send_once(self, routed: Routed, outbound: OutboundRequest, decision: Decision) -> web.StreamResponse:
        """Send a decided request once and pass the appliance's answer back."""
        exchange, runtime = routed.exchange, routed.runtime
        try:
            answer = await runtime.transport.send(outbound)
        except ClientBodyError as exc:
            return self.recorder.refuse(exchange, exc.reason, exc.detail, allowed=decision)
        except UpstreamError as exc:
            return self.recorder.upstream_failed(exchange, runtime, exc.reason, exc.detail, decision)
        self.record_use(exchange, runtime)
        try:
            runtime.upstream_latency.observe(time.perf_counter() - exchange.started)
            sent = header_value(outbound.headers, "Authorization") if runtime.credential is not None else None
            if answer.status == 401 and runtime.credential is not None and sent is not None:
                # The appliance refused labgate's credential, not the client's token; its
                # answer may echo the credential (SimpliVity does), so it is never passed on.
                runtime.credential.rejected(sent)
                detail = f"upstream {runtime.upstream.name!r} refused labgate's credential; {runtime.credential.after_rejection}"
                return self.recorder.upstream_failed(exchange, runtime, Reason.UPSTREAM_CREDENTIAL_REJECTED, detail, decision)
            request = routed.request
            headers, length = answer_headers(answer.header_pairs, exchange.request_id, exchange.rate_headers)
            if (  # a body small enough to read whole (bounded memory) and send in one write
                request.method != "HEAD" and answer.status >= 200 and answer.status not in _NO_BODY_STATUSES
                and length.isdigit() and int(length) <= SMALL_ANSWER_BYTES
            ):
                # Read whole, then headers and body leave in one send: most API
                # answers are a few KiB (a prepared StreamResponse takes two).
                response: web.StreamResponse = web.Response(status=answer.status, body=await answer.read(), headers=headers)
                failure = None
            else:
                response, failure = await self._stream_answer(request, answer, headers, runtime.upstream.name)
        except UpstreamError as exc:
            return self.recorder.upstream_failed(exchange, runtime, exc.reason, exc.detail, decision)
        finally:
            answer.release()
        if failure is not None:
            cut = deny(failure, "the answer was cut", rule=decision.rule, token_type=decision.token_type)
            self.recorder.record(exchange, cut, answer.status)
        else:
            self.recorder.record(exchange, decision, answer.status)
        return response

    def record_use(self, exchange: Exchange, runtime: UpstreamRuntime) -> None:
        """The request reached the appliance: only now is it a use of its token.

        Both records are kept in this process (the uses reach the store in batches, and a
        batch that cannot be written is kept for the next), so nothing here awaits or fails;
        the live-token count is fed directly (what :meth:`GatewayMetrics.token_used` does),
        one call fewer on every request.
        """
        use = exchange.use
        if use is None:
            return
        exchange.use = None
        self._metrics.live_tokens.seen(runtime.upstream.name, use.facts.token_type, use.key)
        self._token_state.record_use_now(use.key, use.facts, use.lifetimes)

    def outbound(
        self,
        routed: Routed,
        body: AsyncIterator[bytes] | None,
        credential: tuple[str, str] | None,
        body_length: int | None = None,
    ) -> OutboundRequest:
        """The request the appliance receives, built from what was decided.

        Its headers are :func:`outbound_headers` of the client's head, the client
        IP and the credential, built once for each distinct set of those (:class:`RememberedHeads`).
        """
        exchange, request = routed.exchange, routed.request
        ip = exchange.client_ip
        last_ip, last_text = self._last_ip  # the address as text: the last one remembered (one object per address)
        if ip is not last_ip:
            last_text = "" if ip is None else str(ip)
            self._last_ip = (ip, last_text)
        rules = routed.runtime.header_filter
        key = (rules, request.raw_headers, last_text, credential)
        headers = self.remembered_heads.get(key)
        if headers is None:
            headers = tuple(
                outbound_headers(
                    request.headers,
                    rules=rules,
                    client_ip=last_text,
                    proto=self._proto,
                    original_host=request.headers.get("Host"),
                    credential=credential,
                )
            )
            self.remembered_heads.remember(key, headers)
        return OutboundRequest(
            method=request.method,
            target=routed.plan.upstream_target,  # the checked raw target under the upstream's base path
            headers=headers,
            body=body,
            body_length=body_length if body is not None else None,
            request_id=exchange.request_id,
        )

    async def request_body(self, request: web.BaseRequest, limit: int) -> AsyncIterator[bytes]:
        """Stream the client's raw body, bounded in size and in time per read; its failures are the client's."""
        total = 0
        while True:
            try:
                async with asyncio.timeout(self._limits.body_timeout):
                    chunk = await request.content.readany()
            except TimeoutError:  # before OSError, which it is in Python 3.11
                raise ClientBodyError(Reason.BODY_TIMEOUT, "the client did not send its body in time") from None
            except (OSError, aiohttp.ClientPayloadError, HttpProcessingError):
                raise ClientBodyError(Reason.CLIENT_ABORTED, "the client went away while sending its body") from None
            if not chunk:
                return
            total += len(chunk)
            if total > limit:
                raise ClientBodyError(Reason.BODY_TOO_LARGE, BODY_TOO_LARGE_DETAIL)
            yield chunk

    async def _credential_for(self, routed: Routed) -> tuple[str, str] | None:
        """The one credential the appliance sees: labgate's own, or the appliance's own token re-emitted."""
        runtime = routed.runtime
        if runtime.credential is not None:
            return "Authorization", await runtime.credential.authorization()
        return self._presented(routed)

    @staticmethod
    def _presented(routed: Routed) -> tuple[str, str] | None:
        """The appliance's own token re-emitted, when it issued the client's token (no credential of labgate's)."""
        presented = routed.exchange.client_token
        if routed.runtime.client_authorization and presented is not None:
            return reemitted(presented, routed.runtime.upstream.token_header)
        return None

    async def _outbound_body(self, request: web.BaseRequest, limit: int) -> tuple[AsyncIterator[bytes] | None, int | None]:
        """The client's body as it will be sent and its length if known, form bodies checked for ``_method`` first."""
        if not request.body_exists:
            return None, None
        length = None if request.headers.get("Transfer-Encoding") else request.content_length
        content_type = request.headers.get("Content-Type", "")
        kind = form_kind(content_type)
        if kind == "urlencoded":
            whole = b"".join([chunk async for chunk in self.request_body(request, min(limit, MAX_FORM_BYTES))])
            if urlencoded_overrides(whole):
                raise FormOverride(Reason.METHOD_OVERRIDE, "a _method form field (method override) is not accepted")
            return once(whole), len(whole)
        body = self.request_body(request, limit)
        if kind == "multipart":
            boundary = multipart_boundary(content_type)
            if boundary is None:
                raise FormOverride(Reason.BAD_REQUEST, "a multipart body needs a valid boundary")
            return without_multipart_override(body, boundary), length
        return body, length

    async def _stream_answer(
        self, request: web.BaseRequest, answer: UpstreamResponse, headers: Pairs, name: str
    ) -> tuple[web.StreamResponse, Reason | None]:
        """Stream a large (or unsized) answer on to the client; the reason when streaming it was cut.

        ``headers``: the answer's headers as the client gets them (:func:`answer_headers`).
        """
        response = web.StreamResponse(status=answer.status, headers=headers)
        try:
            await response.prepare(request)
        except OSError:
            return response, Reason.CLIENT_ABORTED
        return response, await self._stream_back(request, answer.body(), response, name)

    async def _stream_back(
        self, request: web.BaseRequest, body: AsyncIterator[bytes], response: web.StreamResponse, name: str
    ) -> Reason | None:
        """Once headers are sent a failure can only cut the connection, which the client sees.

        Whose failure it was decides how it is counted: the appliance's is an
        upstream error (what the shipped alerts fire on), the client's is not.
        """
        try:
            async for chunk in body:
                try:
                    await response.write(chunk)
                except OSError:
                    return Reason.CLIENT_ABORTED  # the client went away mid-answer
            await response.write_eof()
        except UpstreamError as exc:  # the appliance went away mid-body
            self._metrics.upstream_errors.labels(name, "body_interrupted").inc()
            logger.warning("upstream %s: response body interrupted (%s)", name, exc.reason.code)
            response.force_close()
            # Abort, never finish: a finished chunked answer would look complete to the client.
            if request.transport is not None:
                request.transport.abort()
            return exc.reason
        except OSError:
            return Reason.CLIENT_ABORTED
        return None


async def once(body: bytes) -> AsyncIterator[bytes]:
    """A body already read whole, as the stream a transport sends."""
    yield body
