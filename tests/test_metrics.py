"""GatewayMetrics: each family named as the README says, fed by one small method each."""

from __future__ import annotations

import time

import pytest
from prometheus_client import CollectorRegistry, Histogram

from proxy.metrics import STORE_OPERATIONS, GatewayMetrics, multiprocess_dir


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def test_introspection_results_are_counted_per_upstream() -> None:
    metrics = GatewayMetrics()
    metrics.observe_introspection("vcf", "active")
    metrics.observe_introspection("vcf", "active")
    metrics.observe_introspection("vcf", "error")
    assert sample(metrics.registry, "labgate_introspection_requests_total", upstream="vcf", result="active") == 2
    assert sample(metrics.registry, "labgate_introspection_requests_total", upstream="vcf", result="error") == 1


def test_tokens_learned_from_the_appliance_are_counted_by_type() -> None:
    metrics = GatewayMetrics()
    metrics.observed_token("hcp", "password")
    assert sample(metrics.registry, "labgate_observed_tokens_total", upstream="hcp", token_type="password") == 1


def test_reloads_count_both_results_and_only_success_moves_the_timestamp() -> None:
    before = time.time()
    metrics = GatewayMetrics()
    started = sample(metrics.registry, "labgate_config_last_reload_success_timestamp_seconds")
    assert started is not None and started >= before  # the config in use was loaded at start
    assert sample(metrics.registry, "labgate_config_reloads_total", result="failure") == 0
    metrics.config_reload("failure", at=started + 10)
    assert sample(metrics.registry, "labgate_config_last_reload_success_timestamp_seconds") == started
    metrics.config_reload("success", at=started + 20)
    assert sample(metrics.registry, "labgate_config_reloads_total", result="failure") == 1
    assert sample(metrics.registry, "labgate_config_reloads_total", result="success") == 1
    assert sample(metrics.registry, "labgate_config_last_reload_success_timestamp_seconds") == started + 20


def test_shadow_denials_carry_the_reason_code() -> None:
    metrics = GatewayMetrics()
    metrics.shadow_denial("svt", "emergency", "query_param_not_allowed")
    assert (
        sample(
            metrics.registry,
            "labgate_shadow_denials_total",
            upstream="svt",
            token_type="emergency",
            reason="query_param_not_allowed",
        )
        == 1
    )


def test_every_store_error_series_exists_from_the_start() -> None:
    metrics = GatewayMetrics()
    for operation in STORE_OPERATIONS:
        assert sample(metrics.registry, "labgate_store_errors_total", operation=operation) == 0


def test_live_tokens_are_exposed_per_upstream_and_type() -> None:
    metrics = GatewayMetrics()
    metrics.token_used("svt", "emergency", "a" * 64)
    metrics.token_used("svt", "emergency", "b" * 64)
    metrics.token_used("svt", "emergency", "a" * 64)
    assert b'labgate_live_tokens{token_type="emergency",upstream="svt"} 2.0' in metrics.exposition()


def test_each_gateway_counts_in_its_own_registry() -> None:
    first, second = GatewayMetrics(), GatewayMetrics()
    first.observe_request("svt", "emergency", "deny", "route_not_allowed", 0.001)
    assert multiprocess_dir() is None  # one process: no shared directory
    assert b'labgate_requests_total{decision="deny"' in first.exposition()
    assert b'labgate_requests_total{' not in second.exposition()


def test_request_counts_are_exact_whenever_the_registry_is_read() -> None:
    """The request path's counters are summed before prometheus-client sees them; every read sees them all."""
    metrics = GatewayMetrics()
    looked_up = metrics.token_cache_lookups("svt")
    labels = {"upstream": "svt", "token_type": "emergency", "decision": "allow", "reason": "allowed"}
    for _ in range(3):
        looked_up(True)
        metrics.observe_request("svt", "emergency", "allow", "allowed", 0.002)
    looked_up(False)
    assert sample(metrics.registry, "labgate_requests_total", **labels) == 3
    assert sample(metrics.registry, "labgate_token_cache_lookups_total", upstream="svt", result="hit") == 3
    assert sample(metrics.registry, "labgate_token_cache_lookups_total", upstream="svt", result="miss") == 1
    assert sample(metrics.registry, "labgate_request_duration_seconds_count", upstream="svt", decision="allow") == 3
    metrics.token_cache_lookups("svt")(True)  # a reloaded config's source counts into the same series
    metrics.observe_request("svt", "emergency", "allow", "allowed", 0.002)
    text = metrics.exposition().decode()
    assert 'labgate_requests_total{decision="allow",reason="allowed",token_type="emergency",upstream="svt"} 4.0' in text
    assert 'labgate_token_cache_lookups_total{result="hit",upstream="svt"} 4.0' in text
    assert sample(metrics.registry, "labgate_requests_total", **labels) == 4  # read twice: counted once


def histogram_samples(registry: CollectorRegistry, name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in registry.collect()
        if family.name == name
        for s in family.samples
        if not s.name.endswith("_created")
    }


# On the bounds, between them, past the last one, zero, and many that do not add up exactly in floats.
DURATIONS = [0.0005, 0.001, 0.00051, 0.0, 10.0, 10.5, 1e9, 0.3, 0.1, 0.2, 2.5, 0.0049999] + [0.1 + i * 1e-7 for i in range(200)]


def test_request_and_upstream_durations_read_exactly_as_prometheus_client_observes_them() -> None:
    """Tallied on the request path and handed over when read: the same buckets, count and float sum."""
    metrics = GatewayMetrics()
    reference_registry = CollectorRegistry()
    reference = Histogram(
        "labgate_request_duration_seconds", "reference", ("upstream", "decision"),
        buckets=metrics.request_duration._upper_bounds, registry=reference_registry,
    )
    upstream = metrics.upstream_duration.labels("svt")  # what the upstream's runtime keeps
    for index, seconds in enumerate(DURATIONS):
        metrics.observe_request("svt", "emergency", "allow", "allowed", seconds)
        upstream.observe(seconds)
        reference.labels("svt", "allow").observe(seconds)
        if index % 50 == 0:  # reads in between change nothing
            metrics.exposition()
    expected = histogram_samples(reference_registry, "labgate_request_duration_seconds")
    assert histogram_samples(metrics.registry, "labgate_request_duration_seconds") == expected
    assert histogram_samples(metrics.registry, "labgate_request_duration_seconds") == expected  # read twice: counted once
    upstream_samples = histogram_samples(metrics.registry, "labgate_upstream_duration_seconds")
    assert upstream_samples == {
        (name.replace("request", "upstream"), tuple((k, v) for k, v in labels if k != "decision")): value
        for (name, labels), value in expected.items()
    }
    metrics.observe_request("svt", "emergency", "allow", "allowed", 0.002)
    assert sample(metrics.registry, "labgate_request_duration_seconds_count", upstream="svt", decision="allow") == len(DURATIONS) + 1


def test_the_request_histograms_keep_no_exemplars() -> None:
    with pytest.raises(ValueError, match="exemplars"):
        GatewayMetrics().upstream_duration.labels("svt").observe(0.1, {"trace_id": "abc"})


def test_a_duration_sum_is_added_up_in_observation_order_whenever_it_is_read() -> None:
    metrics, registry = GatewayMetrics(), CollectorRegistry()
    reference = Histogram("reference_seconds", "reference", registry=registry)
    for seconds in (0.1, 0.2, 0.3):
        metrics.observe_request("svt", "emergency", "allow", "allowed", seconds)
        reference.observe(seconds)
        if seconds == 0.1:
            metrics.exposition()  # read between the first observation and the others
    summed = sample(metrics.registry, "labgate_request_duration_seconds_sum", upstream="svt", decision="allow")
    assert summed == sample(registry, "reference_seconds_sum") == (0.1 + 0.2) + 0.3 != 0.1 + (0.2 + 0.3)
