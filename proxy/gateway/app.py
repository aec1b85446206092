"""The gateway: one request handler that decides, then forwards or refuses.

It is served by aiohttp's low-level server (see :mod:`proxy.gateway.server`),
not by a ``web.Application``: labgate has no routes of its own to resolve, and
aiohttp's router would otherwise bind ``{vars}`` on paths we have not checked
yet, or answer plain-text 404s of its own.

Flow for every request (``Gateway.handle``):
own endpoint? -> method known? -> target parsed (400) -> upstream routed (404)
-> bearer token -> token source -> client IP -> :func:`proxy.policy.decide.decide`
-> refuse with JSON, or forward byte-for-byte and stream the answer back.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Callable, Mapping

import aiohttp
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import CIMultiDict

from proxy.config import Config, Upstream
from proxy.credentials.base import CredentialUnavailable, UpstreamCredential
from proxy.credentials.open import forwards_client_authorization, open_credential
from proxy.decision_log import DecisionRecord, log_decision, wants_decision_log
from proxy.gateway.client_token import ClientToken, TokenProblem, client_token, reemitted
from proxy.gateway.errors import BodyTooLarge, error_response
from proxy.gateway.forward_auth import OriginalRequest, forward_auth_answer, original_request
from proxy.gateway.headers import outbound_headers, response_headers
from proxy.gateway.request_shape import (
    MAX_FORM_BYTES, FormOverride, form_kind, multipart_boundary, shape_problem, urlencoded_overrides,
    without_multipart_override,
)
from proxy.gateway.routing import UpstreamRouter
from proxy.gateway.http1 import Http1Transport
from proxy.gateway.inflight import InFlightGates, UpstreamBusy
from proxy.gateway.nodepool import NodePool
from proxy.gateway.ratelimit import RateLimiter
from proxy.gateway.token_endpoint import is_revoke_request, is_token_request, pass_revoke_request, pass_token_request
from proxy.gateway.transport import (
    AiohttpTransport, ClientBodyError, OutboundRequest, UpstreamError, UpstreamResponse, UpstreamTransport,
)
from proxy.gateway.discovery import discovery_endpoints
from proxy.ipaddrs import ClientIpResolver, IPAddress
from proxy.issuer.admin import AdminApi, AdminContext
from proxy.issuer.ring import KeyRing
from proxy.issuer.settings import TOKEN_PATH
from proxy.issuer.token_endpoint import TokenEndpoint
from proxy.metrics import CONTENT_TYPE_LATEST, GatewayMetrics
from proxy.paths import RequestTarget, TargetError, parse_target
from proxy.policy.compile import CompiledPack
from proxy.policy.decide import Decision, RequestFacts, decide, deny
from proxy.policy.model import ROUTE_METHODS, HeaderRules, Lifetimes
from proxy.reasons import Reason
from proxy.store.base import Store, StoreUnavailable
from proxy.store.instrumented import InstrumentedStore
from proxy.store.open import open_store
from proxy.tokens.facts import TokenFacts, TokenRejection, token_fingerprint
from proxy.tokens.state import TokenStateGuard
from proxy.tokens.observe import ObserveSource
from proxy.tokens.source import SourceEvents, TokenSource, open_token_source

logger = logging.getLogger("labgate")

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


BODY_TOO_LARGE_DETAIL = "the request body is larger than allowed"


@dataclass
class UpstreamRuntime:
    """What serving one upstream needs at run time."""

    upstream: Upstream
    pack: CompiledPack
    source: TokenSource
    transport: UpstreamTransport
    base_path: str  # the upstream URL's /base/path ("" for none), before every checked target
    upstream_latency: Any  # this upstream's child of labgate_upstream_duration_seconds
    credential: UpstreamCredential | None = None  # replaces the client's Authorization (README "Upstream credentials")
    client_authorization: bool = True  # the appliance issued the client's token and must see it
    header_rules: HeaderRules = HeaderRules()  # which client headers the appliance may see (pack + upstream)


@dataclass(slots=True)
class Exchange:
    """One request on its way through the gateway: what its answer and its record need.

    Filled in step by step; a request refused early leaves the later fields empty.
    """

    request: web.BaseRequest
    request_id: str
    started: float
    runtime: UpstreamRuntime | None = None
    target: RequestTarget | None = None
    token: TokenFacts | TokenRejection | None = None
    client_ip: IPAddress | None = None
    method: str = ""  # the method decided on: the request's own, or the one a forward-auth question names
    forward_auth: bool = False
    client_token: ClientToken | None = None  # the token as presented, when it was well-formed
    use: "TokenUse | None" = None  # recorded once the request reached the appliance
    rate_headers: dict[str, str] | None = None  # RateLimit and RateLimit-Policy for the answer


@dataclass(frozen=True, slots=True)
class TokenUse:
    """What recording a use of a verified token needs (idle lifetimes, live-token counts)."""

    key: str
    facts: TokenFacts
    lifetimes: Lifetimes


TransportFactory = Callable[[Upstream], UpstreamTransport]


def transport_for(upstream: Upstream) -> UpstreamTransport:
    """The upstream's configured transport: the lean ``http1`` one unless it says ``aiohttp``."""
    if upstream.transport == "aiohttp":
        return AiohttpTransport(upstream)
    return Http1Transport(upstream)


Routed = tuple[Upstream, UpstreamRuntime, RequestTarget]


def request_id_for(request: web.BaseRequest) -> str:
    """The client's ``X-Request-ID`` when it sent exactly one sane one, else a fresh id."""
    given = request.headers.getall("X-Request-ID", ())
    if len(given) == 1 and _SANE_REQUEST_ID.fullmatch(given[0]):
        return given[0]
    return os.urandom(16).hex()  # as unique as a uuid4, a third of the cost


class Gateway:
    """A running labgate: config, per-upstream runtime state and metrics."""

    def __init__(
        self,
        config: Config,
        *,
        metrics: GatewayMetrics | None = None,
        transport_factory: TransportFactory = transport_for,
        store: Store | None = None,
        token_state: TokenStateGuard | None = None,
        readiness: Callable[[], Mapping[str, object]] | None = None,
    ) -> None:
        """``store`` and ``token_state`` given: shared with other config versions, not closed here.

        ``readiness`` adds the config version and last reload to ``/readyz``.
        """
        self.config = config
        self.metrics = metrics or GatewayMetrics()
        self.ip_resolver = ClientIpResolver(config.trusted_proxies, config.client_ip_header)
        self._transport_factory = transport_factory
        self._runtimes: list[UpstreamRuntime] = []
        self.router: UpstreamRouter[UpstreamRuntime] = UpstreamRouter([])
        self._own = {
            config.endpoints.health: self._healthz,
            config.endpoints.ready: self._readyz,
            config.endpoints.metrics: self._metrics,
        }
        if config.endpoints.forward_auth:
            self._own[config.endpoints.forward_auth] = self._forward_auth
        self._target_and_upstream: Callable[[str, str | None], Routed | TargetError] = self._parse_and_route
        self._warned_peers: set[str] = set()
        self._owns_store = store is None
        self.store: Store = InstrumentedStore(open_store(config.store), self.metrics) if store is None else store
        self.token_state = token_state or TokenStateGuard(self.store)
        # labgate's own signing keys: one ring for the JWKS and every issuer source (README "Token service").
        self.key_ring = KeyRing(self.store, config.issuer) if config.issuer else None
        if self.key_ring is not None:
            self._own.update(discovery_endpoints(self.key_ring, request_id_for))
        # The token service's management API (README "Token service"), under its own prefix.
        self.admin: AdminApi | None = None
        if self.key_ring is not None and config.issuer is not None and config.issuer.admin is not None:
            self.admin = AdminApi(config.issuer.admin, AdminContext(config, self.store, self.key_ring, self.token_state))
        self.token_endpoint = TokenEndpoint(config, self.store, self.key_ring, self.token_state) if self.key_ring else None
        self._readiness = readiness
        self.proto = "https" if config.listen.tls else "http"
        # Protecting the appliances (README "Protecting the appliances").
        self.rate_limiter = RateLimiter(self.store, self.metrics)
        self.in_flight = InFlightGates(self.metrics)

    async def start(self) -> None:
        for upstream in self.config.upstreams:
            name = upstream.name
            hits, misses = self.metrics.token_cache.labels(name, "hit"), self.metrics.token_cache.labels(name, "miss")
            events = SourceEvents(
                cache_lookup=lambda hit, hits=hits, misses=misses: (hits if hit else misses).inc(),
                jwks_fetch=lambda result, name=name: self.metrics.jwks_fetches.labels(name, result).inc(),
                introspection=lambda result, name=name: self.metrics.observe_introspection(name, result),
                observed=lambda token_type, name=name: self.metrics.observed_token(name, token_type),
            )
            source = open_token_source(upstream.token_source, self.store, upstream=name, events=events, key_ring=self.key_ring)
            self._runtimes.append(
                UpstreamRuntime(
                    upstream,
                    self.config.packs[upstream.pack],
                    source,
                    self._upstream_transport(upstream),
                    upstream.url.raw_path.rstrip("/"),
                    self.metrics.upstream_duration.labels(name),
                    open_credential(upstream),
                    forwards_client_authorization(upstream),
                    self.config.packs[upstream.pack].pack.headers.merged(upstream.headers),
                )
            )
        self.router = UpstreamRouter([(r.upstream, r) for r in self._runtimes])
        # Bounded: hosts and targets are client-controlled.
        self._target_and_upstream = functools.lru_cache(maxsize=4096)(self._parse_and_route)
        warn_about_client_ip_rules(self.config)

    def _upstream_transport(self, upstream: Upstream) -> UpstreamTransport:
        """The upstream's transport; with ``nodes``, a pool of one per node (README "Several nodes per upstream")."""
        if upstream.nodes is None:
            return self._transport_factory(upstream)
        pool = NodePool(upstream, upstream.nodes, self.metrics, self._transport_factory)
        pool.start_health_checks()
        return pool

    async def close(self) -> None:
        for runtime in self._runtimes:
            await runtime.transport.close()
            await runtime.source.close()
            if runtime.credential is not None:
                await runtime.credential.close()
        self._runtimes.clear()
        if self.key_ring is not None:
            await self.key_ring.close()
        if self._owns_store:
            await self.store.close()

    # -- labgate's own endpoints ------------------------------------------------

    async def _healthz(self, request: web.BaseRequest) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.BaseRequest) -> web.StreamResponse:
        """Ready when started and the store answers; a load balancer takes traffic elsewhere otherwise."""
        status = "ready" if self._runtimes else "starting"
        if self._runtimes:
            try:
                await self.store.ping()
            except StoreUnavailable as exc:
                logger.warning("not ready: %s", exc)
                status = "store_unavailable"
        body: dict[str, object] = {
            "status": status, "upstreams": [r.upstream.name for r in self._runtimes], "store": self.config.store.kind
        }
        nodes = {r.upstream.name: r.transport.states() for r in self._runtimes if isinstance(r.transport, NodePool)}
        if nodes:
            body["nodes"] = nodes  # each node's state; a node left out does not make labgate unready
        if self._readiness is not None:
            body["config"] = self._readiness()
        return web.json_response(body, status=200 if status == "ready" else 503)

    async def _metrics(self, request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    # -- the request path -------------------------------------------------------

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        exchange = Exchange(request, request_id_for(request), time.perf_counter())
        if _head_size(request) > self.config.limits.max_header_block_bytes:
            # aiohttp bounds each line; the whole head is bounded here (and while it arrives, in server.py).
            response = self._refuse(exchange, Reason.HEADERS_TOO_LARGE, "the request headers are too large in total")
            response.force_close()
            return response
        own = self._own.get(request.raw_path)
        if self.admin is not None and own is None and self.admin.owns(request.raw_path):
            return await self.admin.handle(request, exchange.request_id)
        if self.token_endpoint is not None and request.raw_path == TOKEN_PATH:
            return await self._issue_tokens(exchange)
        # nginx asks forward-auth with the client's own method (auth_request subrequests keep it).
        if own is not None and (request.method in ("GET", "HEAD") or request.raw_path == self.config.endpoints.forward_auth):
            return await own(request)
        refusal = self._route(exchange, request.method, request.raw_path, request.headers.get("Host"))
        if refusal is not None:
            return self._refuse(exchange, refusal.reason, refusal.detail)
        assert exchange.runtime is not None and exchange.target is not None  # routed
        pack = exchange.runtime.pack
        shape = shape_problem(request.method, exchange.target, request.headers.keys(), request.body_exists, pack)
        if shape is not None:
            return self._refuse(exchange, shape.reason, shape.detail)
        public = pack.public.match(request.method, exchange.target.segments).rule
        if public is not None:
            return await self._forward_public(exchange, public)
        observed = exchange.runtime.source if isinstance(exchange.runtime.source, ObserveSource) else None
        if observed is not None and is_token_request(observed, request.method, exchange.target, exchange.runtime.pack.pack.case_insensitive_paths):
            return await pass_token_request(self, exchange, observed)
        decision = await self._decide(exchange)  # decide() has no side effects: the revoke hook may still answer instead
        if (
            observed is not None
            and isinstance(exchange.token, TokenFacts)
            and is_revoke_request(observed, request.method, exchange.target, exchange.runtime.pack.pack.case_insensitive_paths)
        ):
            return await pass_revoke_request(self, exchange, observed, exchange.token)
        if not decision.allowed:
            self._record(exchange, decision)
            return error_response(decision.reason, decision.detail, exchange.request_id)
        if decision.shadow:
            self.metrics.shadow_denial(exchange.runtime.upstream.name, decision.token_type or "none", decision.reason.code)
        limited = await self._spend_rate_limits(exchange, exchange.runtime, decision)
        if limited is not None:
            return limited
        return await self._forward(exchange, exchange.runtime, exchange.target, decision)

    def _route(self, exchange: Exchange, method: str, raw_target: str, host: str | None) -> Decision | None:
        """Method known, target checked, upstream found (filled into ``exchange``); the denial otherwise.

        With :meth:`_decide`, the one decision flow for forwarded requests and forward-auth questions.
        """
        exchange.method = method
        if method not in ROUTE_METHODS:
            return deny(Reason.METHOD_NOT_SUPPORTED, f"method {method[:16]!r} is not supported")
        routed = self._target_and_upstream(raw_target, host)
        if isinstance(routed, TargetError):
            return deny(routed.reason, routed.detail)
        _, exchange.runtime, exchange.target = routed
        return None

    async def _decide(self, exchange: Exchange) -> Decision:
        """Token, client IP and policy for a routed exchange (filled into ``exchange``)."""
        request, runtime, target = exchange.request, exchange.runtime, exchange.target
        assert runtime is not None and target is not None  # only after _route
        exchange.token = await self._token_facts(exchange, runtime, target)
        peer = request.remote
        exchange.client_ip = self.ip_resolver.resolve(peer, request.headers)
        self._warn_untrusted_forwarding(request, peer, runtime)
        return decide(RequestFacts(exchange.method, target, exchange.client_ip), exchange.token, runtime.pack)

    async def _issue_tokens(self, exchange: Exchange) -> web.StreamResponse:
        """labgate's own token endpoint (README "Token service"): counted and logged like every request."""
        assert self.token_endpoint is not None
        response, outcome = await self.token_endpoint.handle(exchange.request, exchange.request_id)
        exchange.runtime = next((r for r in self._runtimes if r.upstream.name == outcome.upstream), None)
        rule = "issuer/token_endpoint"
        if outcome.reason is Reason.ALLOWED:
            self._record(exchange, Decision(True, Reason.ALLOWED, rule, outcome.token_type))
        else:
            self._record(exchange, deny(outcome.reason, outcome.detail, rule=rule))
        return response

    async def _forward_auth(self, request: web.BaseRequest) -> web.StreamResponse:
        """A proxy in front asks what labgate would decide; it forwards, labgate never does here."""
        exchange = Exchange(request, request_id_for(request), time.perf_counter(), method=request.method, forward_auth=True)
        asked = original_request(request, self.config.trusted_proxies)
        if isinstance(asked, OriginalRequest):
            decision = self._route(exchange, asked.method, asked.raw_target, asked.host) or await self._decide(exchange)
        else:
            decision = asked
        if decision.shadow and exchange.runtime is not None:
            self.metrics.shadow_denial(exchange.runtime.upstream.name, decision.token_type or "none", decision.reason.code)
        self._record(exchange, decision)
        return forward_auth_answer(decision, exchange.request_id, exchange.runtime.upstream.name if exchange.runtime else None)

    def _parse_and_route(self, raw_target: str, host: str | None) -> Routed | TargetError:
        """The checked target and its upstream; an error value when there is none.

        Pure in its arguments, so its answers are cached: API clients repeat
        the same few targets, and a checked target is immutable.
        """
        try:
            target = parse_target(raw_target, max_query_params=self.config.limits.max_query_params)
        except TargetError as exc:
            return exc.with_traceback(None)  # cached: keep no frames alive
        routed = self.router.route(host, target)
        if routed is None:
            return TargetError(Reason.NO_UPSTREAM, "no upstream serves this host and path")
        return routed

    async def _token_facts(
        self, exchange: Exchange, runtime: UpstreamRuntime, target: RequestTarget
    ) -> TokenFacts | TokenRejection:
        found = client_token(exchange.request.headers, runtime.upstream.token_header)
        if isinstance(found, TokenProblem):
            return TokenRejection(found.reason, found.detail)
        if "access_token" in target.query_names:
            # RFC 9700 section 4.3.2: tokens in URLs leak into logs and Referer.
            return TokenRejection(Reason.MALFORMED_AUTHORIZATION, "tokens are not accepted in the query string")
        exchange.client_token = found
        facts = await runtime.source.verify(found.token)
        if isinstance(facts, TokenFacts):
            key = token_fingerprint(found.token)
            rejection = await self.token_state.check_revoked(key, facts)
            if rejection is not None:
                return rejection
            compiled = runtime.pack.token_types.get(facts.token_type)
            lifetimes = compiled.spec.lifetimes if compiled is not None else Lifetimes()
            if lifetimes.enforced:
                rejection = await self.token_state.check(key, facts, lifetimes)
                if rejection is not None:
                    return rejection
            exchange.use = TokenUse(key, facts, lifetimes)
        return facts

    async def _record_use(self, exchange: Exchange, runtime: UpstreamRuntime) -> None:
        """The request reached the appliance: only now is it a use of its token."""
        use = exchange.use
        if use is None:
            return
        exchange.use = None
        self.metrics.token_used(runtime.upstream.name, use.facts.token_type, use.key)
        try:
            await self.token_state.record_use(use.key, use.facts, use.lifetimes)
        except StoreUnavailable as exc:
            # Already forwarded: the answer stands.  An unrecorded use can only make the
            # token idle out sooner, never live longer.
            logger.warning("a use of a token could not be recorded: %s", exc)

    async def _forward(
        self, exchange: Exchange, runtime: UpstreamRuntime, target: RequestTarget, decision: Decision
    ) -> web.StreamResponse:
        request = exchange.request
        limit = self.config.limits.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return self._refuse(exchange, Reason.BODY_TOO_LARGE, BODY_TOO_LARGE_DETAIL, allowed=decision)
        try:
            body, length = await self._outbound_body(request, limit)
            credential = await self._credential_for(exchange, runtime)
        except ClientBodyError as exc:
            return self._refuse(exchange, exc.reason, exc.detail, allowed=decision)
        except CredentialUnavailable as exc:
            return self._upstream_refused(exchange, runtime, Reason.UPSTREAM_CREDENTIAL_UNAVAILABLE, exc.detail, decision)
        outbound = self._outbound(exchange, runtime, target, body, credential, length)
        return await self._exchange_capped(exchange, runtime, outbound, decision)

    async def _forward_public(self, exchange: Exchange, rule: str) -> web.StreamResponse:
        """A route the pack declares public: forwarded with no credential at all, the client's or labgate's."""
        runtime, target = exchange.runtime, exchange.target
        assert runtime is not None and target is not None
        exchange.client_ip = self.ip_resolver.resolve(exchange.request.remote, exchange.request.headers)
        decision = Decision(True, Reason.ALLOWED, rule)
        if target.raw_query:
            return self._refuse(exchange, Reason.QUERY_PARAM_NOT_ALLOWED, "a public route takes no query parameters")
        limited = await self._spend_rate_limits(exchange, runtime, decision)  # the upstream's limit only
        if limited is not None:
            return limited
        outbound = self._outbound(exchange, runtime, target, None, None)
        return await self._exchange_capped(exchange, runtime, outbound, decision)

    async def _spend_rate_limits(self, exchange: Exchange, runtime: UpstreamRuntime, decision: Decision) -> web.Response | None:
        """An allowed request spends its type's and its upstream's budgets; the 429 answer when one is spent.

        Free when neither the type nor the upstream has a ``rate_limit``: no store call, no headers.
        """
        compiled = runtime.pack.token_types.get(decision.token_type) if decision.token_type else None
        type_limit = compiled.spec.rate_limit if compiled is not None else None
        if type_limit is None and runtime.upstream.rate_limit is None:
            return None
        plan = self.rate_limiter.plan(runtime.upstream, decision.token_type, type_limit)
        assert plan is not None  # a type or upstream limit exists
        facts = exchange.token if isinstance(exchange.token, TokenFacts) else None
        key = exchange.use.key if exchange.use is not None else None
        outcome = await self.rate_limiter.check(runtime.upstream.name, decision.token_type, plan, facts, key)
        if outcome.refusal is None:
            exchange.rate_headers = outcome.headers or None
            return None
        response = self._refuse(exchange, outcome.refusal, outcome.detail, allowed=decision)
        response.headers.update(outcome.headers)
        return response

    async def _exchange_capped(
        self, exchange: Exchange, runtime: UpstreamRuntime, outbound: OutboundRequest, decision: Decision
    ) -> web.StreamResponse:
        """:meth:`_exchange_with` under the upstream's and the type's ``max_in_flight``; 503 upstream_busy past the queue time."""
        upstream = runtime.upstream
        compiled = runtime.pack.token_types.get(decision.token_type) if decision.token_type else None
        caps = tuple(
            cap for cap in (
                self.in_flight.cap(upstream.name, decision.token_type, compiled.spec.max_in_flight if compiled else None),
                self.in_flight.cap(upstream.name, None, upstream.max_in_flight),
            ) if cap is not None
        )
        if not caps:
            return await self._exchange_with(exchange, runtime, outbound, decision)
        try:
            async with self.in_flight.hold(upstream.name, caps, upstream.queue_timeout):
                return await self._exchange_with(exchange, runtime, outbound, decision)
        except UpstreamBusy as busy:
            self.metrics.busy_refusals.labels(upstream.name, decision.token_type or "none").inc()
            detail = f"{busy.cap} has max_in_flight requests at the appliance; waited {busy.waited:.1f} s"
            response = self._refuse(exchange, Reason.UPSTREAM_BUSY, detail, allowed=decision)
            response.headers["Retry-After"] = str(busy.retry_after)
            return response

    async def _exchange_with(
        self, exchange: Exchange, runtime: UpstreamRuntime, outbound: OutboundRequest, decision: Decision
    ) -> web.StreamResponse:
        """Send a decided request once and pass the appliance's answer back."""
        request = exchange.request
        try:
            answer = await runtime.transport.send(outbound)
        except ClientBodyError as exc:
            return self._refuse(exchange, exc.reason, exc.detail, allowed=decision)
        except UpstreamError as exc:
            self.metrics.upstream_errors.labels(runtime.upstream.name, exc.reason.code).inc()
            return self._refuse(exchange, exc.reason, exc.detail, allowed=decision)
        await self._record_use(exchange, runtime)
        try:
            runtime.upstream_latency.observe(time.perf_counter() - exchange.started)
            sent = outbound.headers.get("Authorization")
            if answer.status == 401 and runtime.credential is not None and sent is not None:
                # The appliance refused labgate's credential, not the client's token; its
                # answer may echo the credential (SimpliVity does), so it is never passed on.
                runtime.credential.rejected(sent)
                detail = f"upstream {runtime.upstream.name!r} refused labgate's credential; {runtime.credential.after_rejection}"
                return self._upstream_refused(exchange, runtime, Reason.UPSTREAM_CREDENTIAL_REJECTED, detail, decision)
            response, failure = await self._answer(request, answer, exchange.request_id, runtime.upstream.name, exchange.rate_headers)
        except UpstreamError as exc:
            self.metrics.upstream_errors.labels(runtime.upstream.name, exc.reason.code).inc()
            return self._refuse(exchange, exc.reason, exc.detail, allowed=decision)
        finally:
            answer.release()
        if failure is not None:
            self._record(exchange, deny(failure, "the answer was cut", rule=decision.rule, token_type=decision.token_type), answer.status)
        else:
            self._record(exchange, decision, answer.status)
        return response

    async def _credential_for(self, exchange: Exchange, runtime: UpstreamRuntime) -> tuple[str, str] | None:
        """The one credential the appliance sees: labgate's own, or the appliance's own token re-emitted."""
        if runtime.credential is not None:
            return "Authorization", await runtime.credential.authorization()
        if runtime.client_authorization and exchange.client_token is not None:
            return reemitted(exchange.client_token, runtime.upstream.token_header)
        return None

    async def _outbound_body(self, request: web.BaseRequest, limit: int) -> tuple[AsyncIterator[bytes] | None, int | None]:
        """The client's body as it will be sent and its length if known, form bodies checked for ``_method`` first."""
        if not request.body_exists:
            return None, None
        body = self._request_body(request, limit)
        length = None if request.headers.get("Transfer-Encoding") else request.content_length
        kind = form_kind(request.headers.get("Content-Type", ""))
        if kind == "urlencoded":
            whole = b"".join([chunk async for chunk in self._request_body(request, min(limit, MAX_FORM_BYTES))])
            if urlencoded_overrides(whole):
                raise FormOverride(Reason.METHOD_OVERRIDE, "a _method form field (method override) is not accepted")
            return _once(whole), len(whole)
        if kind == "multipart":
            boundary = multipart_boundary(request.headers.get("Content-Type", ""))
            if boundary is None:
                raise FormOverride(Reason.BAD_REQUEST, "a multipart body needs a valid boundary")
            return without_multipart_override(body, boundary), length
        return body, length

    def _outbound(
        self,
        exchange: Exchange,
        runtime: UpstreamRuntime,
        target: RequestTarget,
        body: AsyncIterator[bytes] | None,
        credential: tuple[str, str] | None,
        body_length: int | None = None,
    ) -> OutboundRequest:
        """The request the appliance receives, built from what was decided (README "Forwarding")."""
        request = exchange.request
        headers = outbound_headers(
            request.headers,
            rules=runtime.header_rules,
            client_ip=str(exchange.client_ip) if exchange.client_ip else "",
            proto=self.proto,
            original_host=request.headers.get("Host"),
            request_id=exchange.request_id,
            credential=credential,
        )
        return OutboundRequest(
            method=request.method,
            # The checked raw target, never request.path or URL(str): what was decided is what is sent.
            target=runtime.base_path + target.forward_target,
            headers=headers,
            body=body,
            body_length=body_length if body is not None else None,
        )

    async def _answer(
        self, request: web.BaseRequest, answer: UpstreamResponse, request_id: str, name: str,
        rate_headers: dict[str, str] | None = None,
    ) -> tuple[web.StreamResponse, Reason | None]:
        """Send the appliance's answer on to the client; the reason when streaming it was cut.

        ``rate_headers`` (labgate's own limits) replace any the appliance sent under the same names.
        """
        headers = response_headers(answer.headers, request_id)
        if rate_headers:
            headers.update(rate_headers)
        if _small_answer(request.method, answer.status, headers):
            # Read whole, then headers and body leave in one send: most API
            # answers are a few KiB (a prepared StreamResponse takes two).
            return web.Response(status=answer.status, body=await answer.read(), headers=headers), None
        response = web.StreamResponse(status=answer.status, headers=headers)
        try:
            await response.prepare(request)
        except OSError:
            return response, Reason.CLIENT_ABORTED
        return response, await self._stream_back(request, answer.body(), response, name)

    async def _request_body(self, request: web.BaseRequest, limit: int) -> AsyncIterator[bytes]:
        """Stream the client's raw body, bounded in size and in time per read; its failures are the client's."""
        total = 0
        while True:
            try:
                async with asyncio.timeout(self.config.limits.body_timeout):
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
            self.metrics.upstream_errors.labels(name, "body_interrupted").inc()
            logger.warning("upstream %s: response body interrupted (%s)", name, exc.reason.code)
            response.force_close()
            # Abort, never finish: a finished chunked answer would look complete to the client.
            if request.transport is not None:
                request.transport.abort()
            return exc.reason
        except OSError:
            return Reason.CLIENT_ABORTED
        return None

    # -- refusing and recording -------------------------------------------------

    def _refuse(
        self, exchange: Exchange, reason: Reason, detail: str, *, allowed: Decision | None = None
    ) -> web.Response:
        """Answer with an error; ``allowed`` is the decision of a request that failed after it."""
        if allowed is None:
            decision = deny(reason, detail)
        else:
            decision = deny(reason, detail, rule=allowed.rule, token_type=allowed.token_type)
        self._record(exchange, decision)
        response = error_response(reason, detail, exchange.request_id)
        if reason in _BODY_LEFT_UNREAD:
            response.force_close()  # the rest of the body is never read
        return response

    def _upstream_refused(
        self, exchange: Exchange, runtime: UpstreamRuntime, reason: Reason, detail: str, allowed: Decision
    ) -> web.Response:
        """An allowed request that failed on the upstream's credential: an upstream error, not a policy denial."""
        self.metrics.upstream_errors.labels(runtime.upstream.name, reason.code).inc()
        return self._refuse(exchange, reason, detail, allowed=allowed)

    def _record(self, exchange: Exchange, decision: Decision, upstream_status: int | None = None) -> None:
        elapsed = time.perf_counter() - exchange.started
        upstream = exchange.runtime.upstream.name if exchange.runtime else None
        outcome = "allow" if decision.allowed else "deny"
        self.metrics.observe_request(upstream or "none", decision.token_type or "none", outcome, decision.reason.code, elapsed)
        if not wants_decision_log(decision.allowed and not decision.shadow, self.config.decision_log):
            return
        facts = exchange.token if isinstance(exchange.token, TokenFacts) else None
        log_decision(
            DecisionRecord(
                request_id=exchange.request_id,
                upstream=upstream,
                method=(exchange.method or exchange.request.method)[:16],
                path=exchange.target.path if exchange.target else None,
                rule=decision.rule,
                client_ip=str(exchange.client_ip) if exchange.client_ip else None,
                peer=exchange.request.remote,
                token_type=decision.token_type,
                token_hash=facts.token_hash if facts else None,
                subject=facts.subject if facts else None,
                allowed=decision.allowed,
                reason=decision.reason.code,
                status=upstream_status or decision.status,
                upstream_status=upstream_status,
                duration_ms=round(elapsed * 1000, 3),
                shadow=decision.shadow,
                forward_auth=exchange.forward_auth,
            ),
            self.config.decision_log,
        )

    def _warn_untrusted_forwarding(self, request: web.BaseRequest, peer: str | None, runtime: UpstreamRuntime) -> None:
        """IP rules see the TCP peer; say so once when a peer sends forwarding headers we ignore."""
        peer = peer or ""
        if peer in self._warned_peers or len(self._warned_peers) >= 64:
            return
        header = "Forwarded" if self.config.client_ip_header == "forwarded" else "X-Forwarded-For"
        if header not in request.headers or not _has_ip_rules(runtime.pack):
            return
        if self.ip_resolver.resolve(peer, {}) in self.config.trusted_proxies:
            return
        self._warned_peers.add(peer)
        logger.warning(
            "peer %s sent %s but is not in trusted_proxies: client_ips rules compare the peer itself; "
            "list the load balancer in trusted_proxies if it is one",
            peer,
            header,
        )


SMALL_ANSWER_BYTES = 64 * 1024
_BODY_LEFT_UNREAD = frozenset(
    {Reason.BODY_TOO_LARGE, Reason.BODY_TIMEOUT, Reason.CLIENT_ABORTED, Reason.METHOD_OVERRIDE, Reason.BAD_REQUEST}
)


async def _once(body: bytes) -> AsyncIterator[bytes]:
    yield body
_NO_BODY_STATUSES = frozenset({204, 304})


def _small_answer(method: str, status: int, headers: CIMultiDict[str]) -> bool:
    """A body small enough to read whole (bounded memory) and send in one write."""
    length = headers.get("Content-Length", "")
    return (
        method != "HEAD"
        and status >= 200
        and status not in _NO_BODY_STATUSES
        and length.isdigit()
        and int(length) <= SMALL_ANSWER_BYTES
    )


def _head_size(request: web.BaseRequest) -> int:
    """The request head's size as sent: request line and header lines with their separators."""
    size = len(request.method) + len(request.raw_path) + 12
    for name, value in request.raw_headers:
        size += len(name) + len(value) + 4
    return size


def _has_ip_rules(pack: CompiledPack) -> bool:
    return any(t.spec.client_ips is not None for t in pack.token_types.values())


def warn_about_client_ip_rules(config: Config) -> None:
    """Say at start when the trusted-proxy setup makes IP rules weaker than they look."""
    uses_ip_rules = any(_has_ip_rules(config.packs[u.pack]) for u in config.upstreams) or any(
        getattr(u.token_source, "client_ips_claim", None) for u in config.upstreams
    )
    if not uses_ip_rules:
        return
    if config.trusted_proxies.covers_everything():
        logger.warning(
            "trusted_proxies covers every address: any client can choose its own IP with %s, "
            "so client_ips rules protect nothing",
            config.client_ip_header,
        )
    elif len(config.trusted_proxies) == 0:
        logger.warning(
            "client_ips rules compare the TCP peer (no trusted_proxies): behind a load balancer "
            "every request would come from the balancer's address; list it in trusted_proxies"
        )
