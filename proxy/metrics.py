"""Prometheus metrics, one registry per running gateway.

Label values are bounded: upstream names, token types and reason codes come
from config and :mod:`proxy.reasons`; never a path, a token, an IP or a subject.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["GatewayMetrics", "CONTENT_TYPE_LATEST"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class GatewayMetrics:
    """The metric families labgate exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "labgate_requests",
            "Requests decided, by upstream, token type, decision and reason.",
            ("upstream", "token_type", "decision", "reason"),
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "labgate_request_duration_seconds",
            "Time from request received to response finished, by upstream and decision.",
            ("upstream", "decision"),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream_duration = Histogram(
            "labgate_upstream_duration_seconds",
            "Time until the appliance answered with headers, by upstream.",
            ("upstream",),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream_errors = Counter(
            "labgate_upstream_errors",
            "Failed upstream exchanges, by upstream and kind.",
            ("upstream", "kind"),
            registry=self.registry,
        )
        self.token_cache = Counter(
            "labgate_token_cache_lookups",
            "Verified-token cache lookups, by upstream and result (hit or miss).",
            ("upstream", "result"),
            registry=self.registry,
        )
        self.jwks_fetches = Counter(
            "labgate_jwks_fetches",
            "JWKS fetches, by upstream and result.",
            ("upstream", "result"),
            registry=self.registry,
        )

        # Label children resolved once per label combination: ``labels()`` costs
        # microseconds on every request otherwise.
        self._request_children: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}

    def observe_request(self, upstream: str, token_type: str, decision: str, reason: str, seconds: float) -> None:
        key = (upstream, token_type, decision, reason)
        children = self._request_children.get(key)
        if children is None:
            children = (self.requests.labels(*key), self.request_duration.labels(upstream, decision))
            self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
