"""Prometheus metrics, one registry per running gateway.

Label values are bounded: upstream names, token types and reason codes come
from config and :mod:`proxy.reasons`; never a path, a token, an IP or a subject.

Several worker processes: when ``PROMETHEUS_MULTIPROC_DIR`` names a directory
(set by the supervisor before its workers start, so before prometheus_client is
imported) every worker writes its values there and ``/metrics`` in any worker
aggregates them all with :class:`MultiProcessCollector`.  The supervisor calls
:func:`mark_worker_dead` for each worker that exits.
"""

from __future__ import annotations

import os
import struct
import time
from bisect import bisect_left
from collections.abc import Callable
from typing import Any, Literal, cast

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    values,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from proxy.live_tokens import LiveTokens
from proxy.metric_tallies import CacheLookups, CountLater, CountNow, Fold, TalliedHistogram

__all__ = ["GatewayMetrics", "CONTENT_TYPE_LATEST", "mark_worker_dead", "multiprocess_dir"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Store calls: microseconds in memory, a millisecond or so over the network; the redis timeout is 2 s.
_STORE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

IntrospectionResult = Literal["active", "inactive", "error"]
ReloadResult = Literal["success", "failure"]
MULTIPROCESS_READ_TRIES = 5
# prometheus_client's multiprocess helpers carry no annotations: mark_process_dead(pid, path) and
# MultiProcessCollector(registry, path), which registers itself with the registry.
_MarkProcessDead = Callable[[int, str], None]
_CollectFrom = Callable[[CollectorRegistry, str], object]
STORE_OPERATIONS = (
    "put_token", "get_token", "drop_token", "touch", "touch_many", "last_used", "revoke", "revoked_at", "revocations",
    "signing_keys", "add_first_signing_key", "rotate_signing_key",
    "put_record", "add_record", "get_record", "list_records", "delete_record", "take_record", "ping",
    "rate_limit",
)


def multiprocess_dir() -> str | None:
    """The directory several workers share their values through, when this process writes there.

    prometheus_client picks its value class when imported, so the variable set
    later changes nothing: ask the library which mode it is in.
    """
    if values.ValueClass is values.MutexValue:
        return None
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


def mark_worker_dead(pid: int, directory: str | None = None) -> None:
    """For the supervisor, when worker ``pid`` exited: its live gauges stop counting.

    ``directory`` is the workers' ``PROMETHEUS_MULTIPROC_DIR`` (default: this
    process's own).  The worker's counters and histograms stay, so totals never
    go back.
    """
    directory = directory or os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        cast(_MarkProcessDead, multiprocess.mark_process_dead)(pid, directory)


class GatewayMetrics:
    """The metric families labgate exports."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # Before every family: a read of the registry folds pending counts in first.
        self._fold = Fold()
        self.registry.register(self._fold)
        self._count_later = multiprocess_dir() is None
        self._counts: dict[Any, CountNow] = {}
        # The request path's histograms: tallied and read later in a single process, observed at once otherwise.
        histogram = TalliedHistogram if self._count_later else Histogram
        self.requests = Counter(
            "labgate_requests",
            "Requests decided, by upstream, token type, decision and reason.",
            ("upstream", "token_type", "decision", "reason"),
            registry=self.registry,
        )
        self.request_duration = histogram(
            "labgate_request_duration_seconds",
            "Time from request received to response finished, by upstream and decision.",
            ("upstream", "decision"),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.upstream_duration = histogram(
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
        self._add_token_and_operation_families()
        self._add_protection_families()
        self._add_node_families()
        self._add_revocation_notice_family()

        # Label children resolved once per label combination: ``labels()`` costs
        # microseconds on every request otherwise.
        self._request_children: dict[tuple[str, str, str, str], tuple[CountNow, Any]] = {}
        self._request_tallies: dict[tuple[str, str, str, str], tuple[CountLater, TalliedHistogram]] = {}
        self._children: dict[tuple[Any, tuple[str, ...]], Any] = {}
        self.live_tokens = LiveTokens(self.live_token_gauge)
        for result in ("success", "failure"):
            self.config_reloads.labels(result)  # both series exist from the start, at 0
        for operation in STORE_OPERATIONS:
            self.store_errors.labels(operation)
        # The config this process runs was loaded (successfully) just now.
        self.config_last_reload_success.set(time.time())

    def _add_token_and_operation_families(self) -> None:
        self.live_token_gauge = Gauge(
            "labgate_live_tokens",
            "Distinct verified tokens that made a request in the last 10 minutes, by upstream and token type.",
            ("upstream", "token_type"),
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.introspection_requests = Counter(
            "labgate_introspection_requests",
            "Token introspection calls to an appliance, by upstream and result (active, inactive, error).",
            ("upstream", "result"),
            registry=self.registry,
        )
        self.observed_tokens = Counter(
            "labgate_observed_tokens",
            "Tokens learned from an appliance's token endpoint, by upstream and token type.",
            ("upstream", "token_type"),
            registry=self.registry,
        )
        self.config_reloads = Counter(
            "labgate_config_reloads",
            "Config reloads, by result (success or failure).",
            ("result",),
            registry=self.registry,
        )
        self.config_last_reload_success = Gauge(
            "labgate_config_last_reload_success_timestamp_seconds",
            "When the config now in use was loaded, in seconds since the epoch.",
            multiprocess_mode="max",
            registry=self.registry,
        )
        # Fed by proxy.store.instrumented.InstrumentedStore, which wraps every store the gateway opens.
        self.store_duration = Histogram(
            "labgate_store_operation_duration_seconds",
            "Time a store operation took, failed ones included, by operation.",
            ("operation",),
            buckets=_STORE_BUCKETS,
            registry=self.registry,
        )
        self.store_errors = Counter(
            "labgate_store_errors",
            "Store operations that failed because the store could not be reached, by operation.",
            ("operation",),
            registry=self.registry,
        )
        self.shadow_denials = Counter(
            "labgate_shadow_denials",
            "Requests a shadow-mode policy would have denied but that were forwarded, by upstream, token type and reason.",
            ("upstream", "token_type", "reason"),
            registry=self.registry,
        )

    def _add_protection_families(self) -> None:
        """What protects the appliances: rate limits and in-flight caps (docs/concepts/protecting-appliances.md)."""
        self.rate_limited_requests = Counter(
            "labgate_rate_limited",
            "Requests refused with 429 rate_limited (never forwarded), by upstream and token type.",
            ("upstream", "token_type"),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "labgate_upstream_in_flight",
            "Requests being forwarded to the appliance now, by upstream.",
            ("upstream",),
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.queued = Gauge(
            "labgate_upstream_queued",
            "Requests waiting for a place under the upstream's max_in_flight, by upstream.",
            ("upstream",),
            multiprocess_mode="livesum",
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "labgate_upstream_queue_wait_seconds",
            "Time requests waited for a place under max_in_flight (those given up on included), by upstream.",
            ("upstream",),
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.busy_refusals = Counter(
            "labgate_upstream_busy",
            "Requests refused with 503 upstream_busy after waiting out the queue time, by upstream and token type.",
            ("upstream", "token_type"),
            registry=self.registry,
        )

    def _add_revocation_notice_family(self) -> None:
        """The Redis store's revocation notice channel (docs/concepts/running.md)."""
        self.revocation_notices_live = Gauge(
            "labgate_revocation_notices_live",
            "1 while this process's revocation notice channel is subscribed and caught up, 0 while revocation "
            "checks ask the store itself instead, by store (Redis only).",
            ("store",),
            multiprocess_mode="livemin",
            registry=self.registry,
        )

    def _add_node_families(self) -> None:
        """Several nodes per upstream (docs/concepts/protecting-appliances.md)."""
        self.node_up = Gauge(
            "labgate_upstream_node_up",
            "1 when a node of the upstream takes requests, 0 while it is left out (back-off or failed health check).",
            ("upstream", "node"),
            multiprocess_mode="min",
            registry=self.registry,
        )
        self.node_failovers = Counter(
            "labgate_upstream_failovers",
            "Requests sent to another node after one failed without anything reaching it, by upstream.",
            ("upstream",),
            registry=self.registry,
        )

    def rate_limited(self, upstream: str, token_type: str) -> None:
        """A request was refused by a rate limit (``labgate_rate_limited_total``)."""
        self._child(self.rate_limited_requests, upstream, token_type).inc()

    def _child(self, family: Any, *labels: str) -> Any:
        """``family.labels(*labels)``, resolved once per combination."""
        key = (family, labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = family.labels(*labels)
        return child

    def _counted(self, child: Any) -> CountNow:
        """How the request path counts into ``child``: later (folded in on every read) in a single process."""
        count = self._counts.get(child)  # one per child, however many config versions ask
        if count is None:
            count = self._counts[child] = CountLater(child) if self._count_later else CountNow(child)
            if isinstance(count, CountLater):
                self._fold.counts.append(count)
        return count

    def observe_request(self, upstream: str, token_type: str, decision: str, reason: str, seconds: float) -> None:
        """A request was answered: counted in ``labgate_requests_total``, its time in ``labgate_request_duration_seconds``.

        In a single process both are tallied right here (:class:`CountLater`,
        :class:`TalliedHistogram`), without a call: this runs for every request.
        """
        key = (upstream, token_type, decision, reason)
        tallies = self._request_tallies.get(key)
        if tallies is not None:
            count, duration = tallies
            count.pending += 1
            duration.tallies[bisect_left(duration.bounds, seconds)] += 1
            duration.tallied_sum += seconds
            return
        children = self._request_children.get(key)
        if children is None:
            children = (self._counted(self.requests.labels(*key)), self.request_duration.labels(upstream, decision))
            self._request_children[key] = children
            if isinstance(children[0], CountLater) and isinstance(children[1], TalliedHistogram):
                self._request_tallies[key] = (children[0], children[1])
        children[0].count()
        children[1].observe(seconds)

    def token_cache_lookups(self, upstream: str) -> CacheLookups:
        """What a token source calls on each cache lookup (hit or miss) in ``labgate_token_cache_lookups_total``."""
        hit, miss = self._counted(self.token_cache.labels(upstream, "hit")), self._counted(self.token_cache.labels(upstream, "miss"))
        return CacheLookups(hit, miss)

    def token_used(self, upstream: str, token_type: str, fingerprint: str) -> None:
        """A request carried this verified token: counted in ``labgate_live_tokens`` for 10 minutes.

        ``fingerprint`` is the token's sha256 (:func:`proxy.token_facts.token_fingerprint`).
        Cheap on the hot path: a repeat within 10 seconds is one set lookup.
        """
        self.live_tokens.seen(upstream, token_type, fingerprint)

    def observe_introspection(self, upstream: str, result: IntrospectionResult) -> None:
        """One introspection call to the appliance answered ``active``, ``inactive``, or failed (``error``)."""
        self._child(self.introspection_requests, upstream, result).inc()

    def observed_token(self, upstream: str, token_type: str) -> None:
        """A token was learned from the appliance's own token endpoint."""
        self._child(self.observed_tokens, upstream, token_type).inc()

    def config_reload(self, result: ReloadResult, at: float) -> None:
        """A config reload finished; ``at`` (epoch seconds) becomes the last success time when it succeeded."""
        self._child(self.config_reloads, result).inc()
        if result == "success":
            self.config_last_reload_success.set(at)

    def shadow_denial(self, upstream: str, token_type: str, reason: str) -> None:
        """A shadow-mode policy would have denied this forwarded request; ``reason`` is the reason code."""
        self._child(self.shadow_denials, upstream, token_type, reason).inc()

    def exposition(self) -> bytes:
        """The text format: this gateway's registry, or every worker's values with several workers."""
        self.live_tokens.expire()
        directory = multiprocess_dir()
        if directory is None:
            return generate_latest(self.registry)
        registry = CollectorRegistry()
        cast(_CollectFrom, multiprocess.MultiProcessCollector)(registry, directory)
        for _ in range(MULTIPROCESS_READ_TRIES - 1):
            try:
                return generate_latest(registry)
            except struct.error:
                # A worker is creating its file right now (it is briefly empty): read again.
                time.sleep(0.01)
        return generate_latest(registry)
