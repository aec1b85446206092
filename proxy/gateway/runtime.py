"""The composition root: what one config version runs on, built in one place and closed in one place.

A config version needs a store (opened here, and only here, for serving,
reloading and every CLI command that needs one), the token state kept in it,
labgate's signing-key ring when it issues tokens, and per upstream its pack,
token source, transport and credential.  Building them anywhere else would let
two parts of labgate disagree about which store or ring is the real one.
"""

from __future__ import annotations

from collections.abc import Callable

from proxy.config import Config, Upstream
from proxy.gateway.credentials_open import (
    forwards_client_authorization,
    open_credential,
)
from proxy.gateway.exchange import UpstreamRuntime
from proxy.gateway.http1 import Http1Transport
from proxy.gateway.nodepool import NodePool
from proxy.gateway.transport import AiohttpTransport, UpstreamTransport
from proxy.issuer.ring import KeyRing
from proxy.metrics import GatewayMetrics
from proxy.store.base import Store
from proxy.store.instrumented import InstrumentedStore
from proxy.store.open import StoreSettings, open_store
from proxy.tokens.source import SourceEvents, open_token_source
from proxy.tokens.state import TokenStateGuard

TransportFactory = Callable[[Upstream], UpstreamTransport]


def transport_for(upstream: Upstream) -> UpstreamTransport:
    """The upstream's configured transport: the lean ``http1`` one unless it says ``aiohttp``."""
    if upstream.transport == "aiohttp":
        return AiohttpTransport(upstream)
    return Http1Transport(upstream)


def open_state_store(settings: StoreSettings, metrics: GatewayMetrics | None = None) -> Store:
    """The one way labgate opens its store; counted in ``metrics`` when serving."""
    store = open_store(settings)
    return store if metrics is None else InstrumentedStore(store, metrics)


class Runtime:
    """One config version's store, token state, key ring and upstream runtimes.

    ``store`` and ``token_state`` given: shared with other config versions
    (a reload that keeps the store settings), so not closed here.
    """

    def __init__(
        self,
        config: Config,
        metrics: GatewayMetrics,
        *,
        store: Store | None = None,
        token_state: TokenStateGuard | None = None,
        transport_factory: TransportFactory = transport_for,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self._owns_store = store is None
        self.store: Store = open_state_store(config.store, metrics) if store is None else store
        self._owns_token_state = token_state is None
        self.token_state = token_state or TokenStateGuard(self.store)
        # labgate's own signing keys: one ring for the JWKS and every issuer source (docs/concepts/token-service.md).
        self.key_ring = KeyRing(self.store, config.issuer) if config.issuer else None
        self.upstreams: list[UpstreamRuntime] = []
        self._transport_factory = transport_factory

    def start(self) -> list[UpstreamRuntime]:
        """Each upstream's source, transport and credential, in config order."""
        for upstream in self.config.upstreams:
            self.upstreams.append(self._upstream_runtime(upstream))
        return self.upstreams

    def _upstream_runtime(self, upstream: Upstream) -> UpstreamRuntime:
        name, metrics = upstream.name, self.metrics
        events = SourceEvents(
            cache_lookup=metrics.token_cache_lookups(name),
            jwks_fetch=lambda result: metrics.jwks_fetches.labels(name, result).inc(),
            introspection=lambda result: metrics.observe_introspection(name, result),
            observed=lambda token_type: metrics.observed_token(name, token_type),
        )
        pack = self.config.packs[upstream.pack]
        return UpstreamRuntime(
            upstream,
            pack,
            open_token_source(upstream.token_source, self.store, upstream=name, events=events, key_ring=self.key_ring),
            self._transport(upstream),
            upstream.url.raw_path.rstrip("/"),
            metrics.upstream_duration.labels(name),
            open_credential(upstream),
            forwards_client_authorization(upstream),
            pack.pack.headers.merged(upstream.headers),
        )

    def _transport(self, upstream: Upstream) -> UpstreamTransport:
        """The upstream's transport; with ``nodes``, a pool of one per node (docs/concepts/protecting-appliances.md)."""
        if upstream.nodes is None:
            return self._transport_factory(upstream)
        pool = NodePool(upstream, upstream.nodes, self.metrics, self._transport_factory)
        pool.start_health_checks()
        return pool

    async def close(self) -> None:
        for runtime in self.upstreams:
            await runtime.transport.close()
            await runtime.source.close()
            if runtime.credential is not None:
                await runtime.credential.close()
        self.upstreams.clear()
        if self.key_ring is not None:
            await self.key_ring.close()
        if self._owns_token_state:
            await self.token_state.close()  # before its store: the uses waiting for their batch are written
        if self._owns_store:
            await self.store.close()
