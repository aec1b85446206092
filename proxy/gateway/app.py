"""The gateway: the request flow, from a request to a decision, then forwarded or refused.

It is served by aiohttp's low-level server (see :mod:`proxy.gateway.server`),
not by a ``web.Application``: labgate has no routes of its own to resolve, and
aiohttp's router would otherwise bind ``{vars}`` on paths we have not checked
yet, or answer plain-text 404s of its own.

Flow for every request (``Gateway.handle``):
own endpoint? -> head size -> method known? -> target parsed (400) -> upstream
routed (404) -> request shape (400) -> public route? -> Commvault's Renew of a
labgate token (:mod:`~proxy.gateway.token_service.service_token_renew`)? -> token -> token source
-> client IP -> :func:`proxy.policy.decide.decide` -> refused with JSON
(:mod:`~proxy.gateway.recorder`), or forwarded (:mod:`~proxy.gateway.forwarder`).
"""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web

from proxy.config import Config, Upstream
from proxy.gateway.client_ip_warnings import ForwardingWarnings, warn_about_client_ip_rules
from proxy.gateway.client_token import TokenProblem, client_token
from proxy.gateway.discovery import discovery_endpoints
from proxy.gateway.exchange import (
    Exchange,
    Routed,
    RoutePlan,
    TokenUse,
    UpstreamRuntime,
    request_id_for,
)
from proxy.gateway.forward_auth import (
    OriginalRequest,
    forward_auth_answer,
    original_request,
)
from proxy.gateway.forwarder import Forwarder
from proxy.gateway.nodepool import NodePool
from proxy.gateway.own_endpoints import OwnEndpoints
from proxy.gateway.protect import Protection
from proxy.gateway.recorder import Recorder
from proxy.gateway.request_shape import OVERRIDE_PARAMETER, body_allowed, shape_problem
from proxy.gateway.routing import UpstreamRouter
from proxy.gateway.runtime import Runtime, TransportFactory, transport_for
from proxy.gateway.token_endpoint import (
    is_revoke_request,
    is_token_request,
    pass_revoke_request,
    pass_token_request,
)
from proxy.gateway.token_service.admin.api import AdminApi
from proxy.gateway.token_service.admin.router import AdminContext
from proxy.gateway.token_service.service_token_renew import ServiceTokenRenew
from proxy.gateway.token_service.token_endpoint import TokenEndpoint
from proxy.ipaddrs import ClientIpResolver
from proxy.issuer.settings import TOKEN_PATH
from proxy.metrics import GatewayMetrics
from proxy.paths import REPEATED_SLASHES, RequestTarget, TargetError, parse_target
from proxy.policy.decide import Decision, deny
from proxy.policy.model import ROUTE_METHODS, Lifetimes
from proxy.reasons import Reason
from proxy.store.base import Store
from proxy.token_facts import TokenFacts, TokenRejection
from proxy.tokens.observe import ObserveSource
from proxy.tokens.state import Pending, TokenStateGuard

_Found = tuple[Upstream, UpstreamRuntime, RequestTarget, RoutePlan]


class Gateway:
    """A running labgate for one config version: per-upstream runtime state, the flow, and its parts."""

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
        self.runtime = Runtime(config, self.metrics, store=store, token_state=token_state, transport_factory=transport_factory)
        self.store, self.token_state, self.key_ring = self.runtime.store, self.runtime.token_state, self.runtime.key_ring
        self._runtimes: list[UpstreamRuntime] = []
        self.router: UpstreamRouter[UpstreamRuntime] = UpstreamRouter([])
        self._found: Callable[[str, str, str | None], _Found | TargetError] = self._parse_and_route
        self.forwarding_warnings = ForwardingWarnings(config, self.ip_resolver)
        # aiohttp bounds the target and each header (name and value together; methods are short): a head with at
        # most this many headers is within max_header_block_bytes whatever they hold, so it is not summed.
        limits = config.limits
        self._headers_always_fit = (limits.max_header_block_bytes - limits.max_line_bytes - 64) // (limits.max_header_bytes + 4)
        self._merges = any(config.packs[u.pack].pack.repeated_slashes == "merge" for u in config.upstreams)
        self.recorder = Recorder(config, self.metrics)
        # Rate limits and in-flight caps (docs/concepts/protecting-appliances.md).
        capped = any(u.max_in_flight is not None for u in config.upstreams) or any(
            t.spec.max_in_flight is not None for pack in config.packs.values() for t in pack.token_types.values()
        )
        self.protection = Protection(self.store, self.metrics, self.recorder, capped=capped)
        self.forwarder = Forwarder(config, self.recorder, self.token_state, self.protection)
        own = OwnEndpoints(
            config, self.store, self.metrics, lambda: [r.upstream.name for r in self._runtimes], readiness, self._node_states
        )
        self._own: dict[str, Callable[[web.BaseRequest], object]] = dict(own.paths)
        if config.endpoints.forward_auth:
            self._own[config.endpoints.forward_auth] = self._forward_auth
        if self.key_ring is not None:
            self._own.update(discovery_endpoints(self.key_ring, request_id_for))
        # The token service's management API (docs/concepts/token-service.md), under its own prefix.
        self.admin: AdminApi | None = None
        if self.key_ring is not None and config.issuer is not None and config.issuer.admin is not None:
            self.admin = AdminApi(config.issuer.admin, AdminContext(config, self.store, self.key_ring, self.token_state))
        self.token_endpoint = TokenEndpoint(config, self.store, self.key_ring, self.token_state) if self.key_ring else None
        # Commvault's POST /V4/AccessToken/Renew for the service-account tokens labgate issued.
        self.service_token_renew = (
            ServiceTokenRenew(config, self.store, self.token_endpoint.renewal, self.recorder) if self.token_endpoint else None
        )

    async def start(self) -> None:
        self._runtimes = self.runtime.start()
        self.router = UpstreamRouter([(r.upstream, r) for r in self._runtimes])
        # Bounded: hosts and targets are client-controlled.
        self._found = functools.lru_cache(maxsize=4096)(self._parse_and_route)
        warn_about_client_ip_rules(self.config)

    def _node_states(self) -> dict[str, object]:
        return {r.upstream.name: r.transport.states() for r in self._runtimes if isinstance(r.transport, NodePool)}

    async def close(self) -> None:
        await self.runtime.close()

    # -- the request flow ---------------------------------------------------------

    def serving(self) -> tuple[Callable[[web.BaseRequest], Awaitable[web.StreamResponse]], Callable[[], None]]:
        """This gateway serves every request itself (:class:`~proxy.gateway.reload.ReloadingGateway` picks versions)."""
        return self.handle, _nothing

    def handle(self, request: web.BaseRequest) -> Awaitable[web.StreamResponse]:
        """The request's answer, to be awaited; synchronous up to routing, so a request has no coroutine of this layer.

        Every path ends in one awaitable: a refusal decided here in :func:`_ready`.
        """
        exchange = Exchange(request, request_id_for(request), time.perf_counter())
        raw = request.raw_headers
        if len(raw) > self._headers_always_fit and _head_size(request, raw) > self.config.limits.max_header_block_bytes:
            # aiohttp bounds each line; the whole head is bounded here (and while it arrives, in server.py).
            response = self.recorder.refuse(exchange, Reason.HEADERS_TOO_LARGE, "the request headers are too large in total")
            response.force_close()
            return _ready(response)
        own = self._own.get(request.raw_path)
        if self.admin is not None and own is None and self.admin.owns(request.raw_path):
            return self.admin.handle(request, exchange.request_id)
        if self.token_endpoint is not None and request.raw_path == TOKEN_PATH:
            return self._issue_tokens(exchange)
        # nginx asks forward-auth with the client's own method (auth_request subrequests keep it).
        if own is not None and (request.method in ("GET", "HEAD") or request.raw_path == self.config.endpoints.forward_auth):
            return own(request)  # type: ignore[return-value]
        routed = self._route(exchange, request.method, request.raw_path, request.headers.get("Host"))
        if isinstance(routed, Decision):
            return _ready(self.recorder.refuse(exchange, routed.reason, routed.detail))
        return self._handle_routed(routed)

    def _handle_routed(self, routed: Routed) -> Awaitable[web.StreamResponse]:
        """A routed request's answer, to be awaited; a request decided here has no coroutine of this layer."""
        request, runtime, target, exchange = routed.request, routed.runtime, routed.target, routed.exchange
        plan = routed.plan
        shape = shape_problem(request.method, tuple(request.headers.keys()), request.body_exists, plan)
        if shape is not None:
            return _ready(self.recorder.refuse(exchange, shape.reason, shape.detail))
        public = plan.public
        if public is not None:
            exchange.client_ip = self.ip_resolver.resolve(request.remote, request.headers)
            return self.forwarder.forward_public(routed, public)
        renew = self.service_token_renew
        if renew is not None and renew.serves(runtime, request.method, target):
            exchange.client_ip = self.ip_resolver.resolve(request.remote, request.headers)
            return renew.handle(routed)
        observed = runtime.source if isinstance(runtime.source, ObserveSource) else None
        if observed is not None and is_token_request(observed, request.method, target, runtime.pack.pack.case_insensitive_paths):
            return pass_token_request(self.forwarder, routed, observed)
        token = self._token_facts_now(routed)
        if not isinstance(token, (TokenFacts, TokenRejection)):
            return self._decided_later(routed, token, observed)
        return self._act_on(routed, self._decided(routed, token), observed)

    async def _decided_later(
        self, routed: Routed, token: Awaitable[TokenFacts | TokenRejection], observed: ObserveSource | None
    ) -> web.StreamResponse:
        """The token's awaited checks, then the decision acted on."""
        return await self._act_on(routed, self._decided(routed, await token), observed)

    def _act_on(self, routed: Routed, decision: Decision, observed: ObserveSource | None) -> Awaitable[web.StreamResponse]:
        """Refused, or budgets spent and forwarded; the answer, to be awaited."""
        exchange = routed.exchange
        # decide() has no side effects: the revoke hook may still answer instead.
        if (
            observed is not None
            and isinstance(exchange.token, TokenFacts)
            and is_revoke_request(observed, routed.request.method, routed.target, routed.runtime.pack.pack.case_insensitive_paths)
        ):
            return pass_revoke_request(self.forwarder, routed, observed, exchange.token)
        if not decision.allowed:
            return _ready(self.recorder.refuse_decided(exchange, decision))
        if decision.shadow:
            self.recorder.shadowed(routed.runtime, decision)
        pending = self.protection.spend(routed, decision)  # after the decision: a denial spends nothing
        if pending is not None:
            return self._forward_after(routed, decision, pending)
        return self.forwarder.forward(routed, decision)

    async def _forward_after(
        self, routed: Routed, decision: Decision, pending: Awaitable[web.StreamResponse | None]
    ) -> web.StreamResponse:
        """Forwarded once the store has spent the budgets; the 429 answer when one was spent."""
        limited = await pending
        if limited is not None:
            return limited
        return await self.forwarder.forward(routed, decision)

    def _route(self, exchange: Exchange, method: str, raw_target: str, host: str | None) -> Routed | Decision:
        """Method known, target checked, upstream found; the denial otherwise.

        With :meth:`_decide`, the one decision flow for forwarded requests and forward-auth questions.
        """
        exchange.method = method
        if method not in ROUTE_METHODS:
            return deny(Reason.METHOD_NOT_SUPPORTED, f"method {method[:16]!r} is not supported")
        found = self._found(method, raw_target, host)
        if isinstance(found, TargetError):
            return deny(found.reason, found.detail)
        _, runtime, target, plan = found
        exchange.runtime, exchange.target = runtime, target
        return Routed(exchange, runtime, target, exchange.request, plan)

    async def _decide(self, routed: Routed) -> Decision:
        """Token, client IP and policy for a routed exchange (filled into its exchange for the record)."""
        token = self._token_facts_now(routed)
        if not isinstance(token, (TokenFacts, TokenRejection)):
            token = await token
        return self._decided(routed, token)

    def _decided(self, routed: Routed, token: TokenFacts | TokenRejection) -> Decision:
        """Client IP and policy, the token known (pure: nothing awaited)."""
        exchange, request, runtime = routed.exchange, routed.request, routed.runtime
        exchange.token = token
        peer = request.remote
        ip = self.ip_resolver.direct.get(peer or "")  # a peer known not to be a trusted proxy: the client itself
        exchange.client_ip = ip if ip is not None else self.ip_resolver.resolve(peer, request.headers)
        if self.forwarding_warnings.header in request.headers:  # the warning is only about a header sent
            self.forwarding_warnings.untrusted_forwarding(request, peer, runtime.pack)
        return runtime.decisions.decide(exchange.method, routed.target, exchange.client_ip, token)

    async def _issue_tokens(self, exchange: Exchange) -> web.StreamResponse:
        """labgate's own token endpoint (docs/concepts/token-service.md): counted and logged like every request."""
        assert self.token_endpoint is not None  # only called when there is one
        response, outcome = await self.token_endpoint.handle(exchange.request, exchange.request_id)
        exchange.runtime = next((r for r in self._runtimes if r.upstream.name == outcome.upstream), None)
        rule = "issuer/token_endpoint"
        if outcome.reason is Reason.ALLOWED:
            self.recorder.record(exchange, Decision(True, Reason.ALLOWED, rule, outcome.token_type))
        else:
            self.recorder.record(exchange, deny(outcome.reason, outcome.detail, rule=rule))
        return response

    async def _forward_auth(self, request: web.BaseRequest) -> web.StreamResponse:
        """A proxy in front asks what labgate would decide; it forwards, labgate never does here."""
        exchange = Exchange(request, request_id_for(request), time.perf_counter(), method=request.method, forward_auth=True)
        asked = original_request(request, self.config.trusted_proxies)
        if isinstance(asked, OriginalRequest):
            routed = self._route(exchange, asked.method, asked.raw_target, asked.host)
            decision = routed if isinstance(routed, Decision) else await self._decide(routed)
        else:
            decision = asked
        if decision.shadow and exchange.runtime is not None:
            self.recorder.shadowed(exchange.runtime, decision)
        self.recorder.record(exchange, decision)
        return forward_auth_answer(decision, exchange.request_id, exchange.runtime.upstream.name if exchange.runtime else None)

    def _parse_and_route(self, method: str, raw_target: str, host: str | None) -> _Found | TargetError:
        """The checked target, its upstream and what the method may do there; an error value when there is none.

        Pure in its arguments, so its answers are cached: API clients repeat
        the same few targets, and a checked target is immutable.
        """
        try:
            # '//' is read merged only if some upstream's appliance merges it; then only that upstream takes it.
            target = parse_target(raw_target, max_query_params=self.config.limits.max_query_params, merge_slashes=self._merges)
        except TargetError as exc:
            return exc.with_traceback(None)  # cached: keep no frames alive
        found = self.router.route(host, target)
        if target.merged_slashes and (found is None or found[1].pack.pack.repeated_slashes != "merge"):
            return TargetError(Reason.AMBIGUOUS_PATH, REPEATED_SLASHES)
        if found is None:
            return TargetError(Reason.NO_UPSTREAM, "no upstream serves this host and path")
        upstream, runtime, routed = found  # the target without the upstream's path prefix
        pack = runtime.pack
        plan = RoutePlan(
            query_override=OVERRIDE_PARAMETER in routed.query_names,
            body_allowed=body_allowed(method, routed, pack),
            public=pack.public.match(method, routed.segments).rule,
            # The checked raw target, never a decoded path or URL(str): what was decided is what is sent.
            upstream_target=runtime.base_path + routed.forward_target,
        )
        return upstream, runtime, routed, plan

    def _token_facts_now(self, routed: Routed) -> TokenFacts | TokenRejection | Awaitable[TokenFacts | TokenRejection]:
        """The verdict without an await when all of it is known here; else the awaited checks, from where this stopped.

        Known here: a cached verified token, its names cleared by the revocation view, lifetimes needing no store read.
        The token's fingerprint is taken once (with the token: :class:`ClientToken`) and handed on; its type's
        lifetimes are read here rather than through :func:`_lifetimes`: this runs for every request.
        """
        runtime, exchange = routed.runtime, routed.exchange
        found = client_token(exchange.request.headers, runtime.upstream.token_header)
        if isinstance(found, TokenProblem):
            return TokenRejection(found.reason, found.detail)
        if "access_token" in routed.target.query_names:
            # RFC 9700 section 4.3.2: tokens in URLs leak into logs and Referer.
            return TokenRejection(Reason.MALFORMED_AUTHORIZATION, "tokens are not accepted in the query string")
        exchange.client_token = found
        key = found.fingerprint
        facts = runtime.source.verify_here(found.token, key)
        if facts is None:
            return self._verified(routed, found.token, key)
        if isinstance(facts, TokenRejection):
            return facts
        compiled = runtime.pack.token_types.get(facts.token_type)
        lifetimes = compiled.spec.lifetimes if compiled is not None else _NO_LIFETIMES
        known = self.token_state.known_here(key, facts, lifetimes)
        if known is Pending.STORE:
            return self._checked(routed, key, facts)
        if known is not None:
            return known
        exchange.use = TokenUse(key, facts, lifetimes)
        return facts

    async def _verified(self, routed: Routed, token: str, key: str) -> TokenFacts | TokenRejection:
        """The token source's full check (not cached), then the token state's; ``key`` is the token's fingerprint."""
        facts = await routed.runtime.source.verify(token)
        if isinstance(facts, TokenFacts):
            return await self._checked(routed, key, facts)
        return facts

    async def _checked(self, routed: Routed, key: str, facts: TokenFacts) -> TokenFacts | TokenRejection:
        """Revocation, then lifetimes, each through the store when this process cannot tell."""
        rejection = await self.token_state.check_revoked(key, facts)
        if rejection is not None:
            return rejection
        lifetimes = _lifetimes(routed.runtime, facts)
        if lifetimes.enforced:
            rejection = await self.token_state.check(key, facts, lifetimes)
            if rejection is not None:
                return rejection
        routed.exchange.use = TokenUse(key, facts, lifetimes)
        return facts


_NO_LIFETIMES = Lifetimes()


def _lifetimes(runtime: UpstreamRuntime, facts: TokenFacts) -> Lifetimes:
    compiled = runtime.pack.token_types.get(facts.token_type)
    return compiled.spec.lifetimes if compiled is not None else _NO_LIFETIMES


def _nothing() -> None:
    return None


async def _ready(response: web.StreamResponse) -> web.StreamResponse:
    """An answer decided without waiting, as the awaitable :meth:`Gateway.handle` hands out."""
    return response


def _head_size(request: web.BaseRequest, raw: tuple[tuple[bytes, bytes], ...]) -> int:
    """The request head's size as sent: request line and header lines with their separators."""
    # Joined in C rather than summed in a Python loop.
    return len(request.method) + len(request.raw_path) + 12 + len(b"".join(itertools.chain.from_iterable(raw))) + 4 * len(raw)
