"""An upstream with several nodes: one transport (and pool) per node behind the one transport seam.

Requests go round robin, or to the node with the fewest requests in flight.
Passive health: a node that refuses a connection or times out is left out for
the upstream's ``node_backoff``.  Active health (``health``): each node is asked
``GET path`` every ``interval``; a node whose answer is late or unexpected is
left out until it answers as expected again.  When every node is out, requests
still go to them in turn: refusing for certain is no better than trying.

A request fails over to another node only when that cannot send it twice: the
connection never opened (nothing was sent), or it broke before any answer on a
bodiless idempotent request (:attr:`UpstreamError.resend_safe`).  After a
timeout or once a body may have been sent, the error stands.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import operator
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass, replace
from typing import Any

from multidict import CIMultiDictProxy

from proxy.config import Upstream
from proxy.gateway.transport import (
    OutboundRequest,
    UpstreamError,
    UpstreamResponse,
    UpstreamTransport,
)
from proxy.metrics import GatewayMetrics
from proxy.reasons import Reason
from proxy.upstream_nodes import HealthCheck, NodeSettings, node_label

logger = logging.getLogger("labgate")
_IN_FLIGHT = operator.attrgetter("in_flight")


@dataclass(eq=False)
class Node:
    """One node: its transport, its load and whether it is in use."""

    label: str
    transport: UpstreamTransport
    in_flight: int = 0
    out_until: float = 0.0  # passive health: left out until then (monotonic seconds)
    healthy: bool = True  # active health: the last check's verdict

    def available(self, now: float) -> bool:
        return self.healthy and now >= self.out_until

    @property
    def state(self) -> str:
        if not self.healthy:
            return "unhealthy"
        return "backoff" if time.monotonic() < self.out_until else "up"


class _NodeResponse:
    """The node's answer; releasing it also frees the node's place.

    ``read`` and ``body`` are the node transport's own (bound at creation): no
    wrapper call of this layer between forwarding and the transport.
    """

    __slots__ = ("_inner", "_node", "status", "header_pairs", "read", "body")

    def __init__(self, inner: UpstreamResponse, node: Node) -> None:
        self._inner = inner
        self._node: Node | None = node
        self.status = inner.status
        self.header_pairs = inner.header_pairs
        self.read: Callable[[], Coroutine[Any, Any, bytes]] = inner.read
        self.body: Callable[[], AsyncIterator[bytes]] = inner.body

    @property
    def headers(self) -> CIMultiDictProxy[str]:
        return self._inner.headers

    def release(self) -> None:
        self._inner.release()
        if self._node is not None:
            self._node.in_flight -= 1
            self._node = None


class NodePool:
    """Implements :class:`UpstreamTransport` over one transport per node."""

    def __init__(
        self, upstream: Upstream, settings: NodeSettings, metrics: GatewayMetrics,
        transport_for: Callable[[Upstream], UpstreamTransport],
    ) -> None:
        self._name = upstream.name
        self._settings = settings
        self._metrics = metrics
        self.nodes = [Node(node_label(url), transport_for(replace(upstream, url=url, nodes=None))) for url in settings.urls]
        self._turn = itertools.count()
        self._least_in_flight = settings.balance == "least_in_flight"
        self._checks: list[asyncio.Task[None]] = []
        for node in self.nodes:
            self._publish(node)

    def start_health_checks(self) -> None:
        """Active checks, when configured: one task per node, until :meth:`close`."""
        if self._settings.health is not None and not self._checks:
            self._checks = [asyncio.create_task(self._check_forever(n, self._settings.health)) for n in self.nodes]

    async def send(self, request: OutboundRequest) -> UpstreamResponse:
        """The request to an untried node in use (round robin or least in flight), any untried one when none is.

        The choice is made inline, in plain loops: it runs for every request to a multi-node upstream.
        """
        tried: list[Node] = []
        while True:
            now = time.monotonic()
            candidates: list[Node] = []
            usable: list[Node] = []
            for candidate in self.nodes:
                if candidate not in tried:
                    candidates.append(candidate)
                    if candidate.healthy and now >= candidate.out_until:  # Node.available, inline
                        usable.append(candidate)
            usable = usable or candidates
            if self._least_in_flight:
                node = min(usable, key=_IN_FLIGHT)
            else:
                node = usable[next(self._turn) % len(usable)]
            tried.append(node)
            node.in_flight += 1
            try:
                answer = await node.transport.send(request)
            except UpstreamError as exc:
                node.in_flight -= 1
                self._passive_failure(node, exc)
                if exc.resend_safe and len(tried) < len(self.nodes):
                    self._metrics.node_failovers.labels(self._name).inc()
                    continue
                raise
            except BaseException:
                node.in_flight -= 1
                raise
            return _NodeResponse(answer, node)

    def _passive_failure(self, node: Node, exc: UpstreamError) -> None:
        if exc.reason in (Reason.UPSTREAM_UNREACHABLE, Reason.UPSTREAM_TIMEOUT):
            node.out_until = time.monotonic() + self._settings.backoff
            logger.warning("upstream %s: node %s left out for %.0f s (%s)", self._name, node.label, self._settings.backoff, exc.reason.code)
            self._publish(node)

    async def _check_forever(self, node: Node, check: HealthCheck) -> None:
        while True:
            healthy = await self._check_once(node, check)
            if healthy != node.healthy:
                logger.warning("upstream %s: node %s is %s", self._name, node.label, "healthy" if healthy else "unhealthy")
            node.healthy = healthy
            self._publish(node)
            await asyncio.sleep(check.interval)

    async def _check_once(self, node: Node, check: HealthCheck) -> bool:
        request = OutboundRequest("GET", check.path, [("User-Agent", "labgate-health-check")], None)
        try:
            async with asyncio.timeout(check.timeout):
                answer = await node.transport.send(request)
                try:
                    await answer.read()
                finally:
                    answer.release()
        except (UpstreamError, TimeoutError, OSError):
            return False
        return answer.status in check.expect

    def _publish(self, node: Node) -> None:
        self._metrics.node_up.labels(self._name, node.label).set(1 if node.available(time.monotonic()) else 0)

    def states(self) -> list[dict[str, object]]:
        """For ``/readyz``: each node, its state (up, backoff, unhealthy) and its requests in flight."""
        for node in self.nodes:
            self._publish(node)  # a back-off may have ended since the last failure
        return [{"node": n.label, "state": n.state, "in_flight": n.in_flight} for n in self.nodes]

    async def close(self) -> None:
        for task in self._checks:
            task.cancel()
        for task in self._checks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for node in self.nodes:
            await node.transport.close()
