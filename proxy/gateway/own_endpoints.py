"""labgate's own endpoints: liveness, readiness and metrics, answered outside any policy."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

from aiohttp import web

from proxy.config import Config
from proxy.metrics import CONTENT_TYPE_LATEST, GatewayMetrics
from proxy.store.base import Store, StoreUnavailable

logger = logging.getLogger("labgate")



class OwnEndpoints:
    """``/healthz``, ``/readyz`` and ``/metrics`` (paths from ``endpoints`` in the config)."""

    def __init__(
        self,
        config: Config,
        store: Store,
        metrics: GatewayMetrics,
        upstreams: Callable[[], list[str]],
        readiness: Callable[[], Mapping[str, object]] | None = None,
        node_states: Callable[[], Mapping[str, object]] | None = None,
    ) -> None:
        """``upstreams``: the names served once started (empty before); ``readiness`` adds the config version;
        ``node_states`` each node of the upstreams that have several (docs/concepts/protecting-appliances.md)."""
        self._store_kind = config.store.kind
        self._store = store
        self._metrics = metrics
        self._upstreams = upstreams
        self._readiness = readiness
        self._node_states = node_states
        self.paths = {
            config.endpoints.health: self.healthz,
            config.endpoints.ready: self.readyz,
            config.endpoints.metrics: self.metrics,
        }

    async def healthz(self, request: web.BaseRequest) -> web.StreamResponse:
        return web.json_response({"status": "ok"})

    async def readyz(self, request: web.BaseRequest) -> web.StreamResponse:
        """Ready when started and the store answers; a load balancer takes traffic elsewhere otherwise."""
        upstreams = self._upstreams()
        status = "ready" if upstreams else "starting"
        if upstreams:
            try:
                await self._store.ping()
            except StoreUnavailable as exc:
                logger.warning("not ready: %s", exc)
                status = "store_unavailable"
        body: dict[str, object] = {"status": status, "upstreams": upstreams, "store": self._store_kind}
        feed = self._store.revocation_feed
        if feed is not None:
            # Not a readiness condition: with the channel down, revocation checks ask the store itself.
            feed.start()
            body["revocation_notices"] = "live" if feed.fresh() else "behind" if feed.subscribed() else "down"
        nodes = self._node_states() if self._node_states is not None else {}
        if nodes:
            body["nodes"] = nodes  # each node's state; a node left out does not make labgate unready
        if self._readiness is not None:
            body["config"] = self._readiness()
        return web.json_response(body, status=200 if status == "ready" else 503)

    async def metrics(self, request: web.BaseRequest) -> web.StreamResponse:
        return web.Response(body=self._metrics.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST})
