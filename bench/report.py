"""The report of ``bench.run``: each target's median round, the ratios by round, the verdict, the JSON."""

from __future__ import annotations

import argparse
import json
import math
import shutil
import statistics
from typing import Any

from bench.labgate_setup import TARGET
from bench.processes import LOAD_CPU, PROXY_CPU, pinning_possible

BAR = 2.0  # labgate's CPU time per request must be at most 1/BAR of the bare proxy's, for every store
UPSTREAM, BARE, NGINX = "upstream direct", "bare aiohttp proxy", "nginx proxy"
FLOOR = "aiohttp floor (no checks)"
UNCHECKED = "unchecked labgate (memory)"  # labgate with its checks taken out: bench/unchecked_serve.py


def median_round(runs: list[dict[str, float]]) -> dict[str, Any]:
    """The round with the median throughput; errors summed over all rounds; every round's req/s."""
    ordered = sorted(runs, key=lambda r: r["requests_per_second"])
    chosen: dict[str, Any] = dict(ordered[(len(ordered) - 1) // 2])
    chosen["non_2xx"] = sum(r["non_2xx"] for r in runs)
    chosen["errors"] = sum(r["errors"] for r in runs)
    chosen["cpu_us_per_request"] = median_or_nan([r["cpu_us_per_request"] for r in runs])
    chosen["rounds_cpu_us_per_request"] = [r["cpu_us_per_request"] for r in runs]
    chosen["rounds_rps"] = [round(r["requests_per_second"]) for r in runs]
    return chosen


def median_or_nan(values: list[float]) -> float:
    known = [v for v in values if not math.isnan(v)]
    return statistics.median(known) if known else math.nan


def round_ratios(rounds: dict[str, list[dict[str, float]]], top: str, bottom: str, key: str) -> tuple[float, list[float]]:
    """``top[key] / bottom[key]`` in each round, and their median (NaN when unknown)."""
    ratios = [a[key] / b[key] if b[key] and not math.isnan(b[key]) else math.nan
              for a, b in zip(rounds[top], rounds[bottom])]
    return median_or_nan(ratios), ratios


def bar_verdict(median: float, rounds: list[float], *, errors: bool) -> str:
    """PASS only when the median and every round reach the bar: a figure the rounds disagree on is not claimed.

    Error answers from labgate would be cheap answers: with any, it cannot pass.
    """
    known = [r for r in rounds if not math.isnan(r)]
    return "PASS" if median >= BAR and known and min(known) >= BAR and not errors else "FAIL"


def by_round(ratios: list[float]) -> str:
    if len(ratios) < 2:
        return ""
    return "   rounds: " + " ".join("-" if math.isnan(r) else f"{r:.2f}" for r in ratios)


def without_nan(value: Any) -> Any:
    """``value`` with NaN floats as None (JSON has no NaN)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: without_nan(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nan(v) for v in value]
    return value


def percent(fraction: float, width: int) -> str:
    return f"{'-':>{width}}" if math.isnan(fraction) else f"{fraction * 100:>{width - 1}.0f}%"


def cell(value: float, width: int, digits: int = 0) -> str:
    return f"{'-':>{width}}" if math.isnan(value) else f"{value:>{width}.{digits}f}"


def report(results: dict[str, dict[str, Any]], rounds: dict[str, list[dict[str, float]]],
           counts: dict[str, dict[str, float]], upstream_kind: str, args: argparse.Namespace,
           unloaded: dict[str, dict[str, Any]], scaling: dict[str, Any]) -> int:
    loader = "wrk -t1" if shutil.which("wrk") else "bench.loadgen"
    placement = (f"proxies pinned to CPU {min(PROXY_CPU)}, upstream and load generator to CPU {min(LOAD_CPU)}"
                 if pinning_possible() else "no CPU pinning (fewer than 2 usable CPUs): ratios are still comparable, 'one core' is not")
    print(f"labgate benchmark: GET /svt{TARGET} with an HS256 bearer token; upstream: {upstream_kind}; load: {loader}")
    print(f"{args.connections} connections; {args.rounds} round(s) of {args.warmup:g} s warm-up + {args.duration:g} s "
          f"measured per target in {args.slices} interleaved slice(s) (median round shown); {placement}")
    print()
    header = (f"{'target':<28} {'req/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'non-2xx':>7} {'errors':>6} "
              f"{'CPU busy':>8} {'CPU us/req':>10} {'others':>6}  req/s by round")
    print(header)
    print("-" * len(header))
    for name, r in results.items():
        label = f"{name} ({upstream_kind})" if name == UPSTREAM else name
        print(f"{label:<28} {r['requests_per_second']:>8.0f} {r['p50_ms']:>7.2f} {r['p99_ms']:>7.2f} "
              f"{int(r['non_2xx']):>7} {int(r['errors']):>6} {percent(r['cpu_busy'], 8)} "
              f"{cell(r['cpu_us_per_request'], 10)} {percent(r['others_busy'], 6)}  {' '.join(str(x) for x in r['rounds_rps'])}")
    print()

    # Ratios are taken within each round (the targets of one round ran within
    # seconds of each other, under the same machine conditions), then the median.
    # The bar is by CPU time per request (one core's capacity), for every store:
    # requests/s also depends on the load side, which shares a core with the upstream.
    verdicts: dict[str, dict[str, Any]] = {}
    for name in (n for n in results if n.startswith("labgate")):
        lab = results[name]
        ratio, ratios = round_ratios(rounds, name, BARE, "requests_per_second")
        cpu_ratio, cpu_ratios = round_ratios(rounds, BARE, name, "cpu_us_per_request")
        errors = bool(lab["non_2xx"] or lab["errors"])
        verdict = bar_verdict(cpu_ratio, cpu_ratios, errors=errors)
        shown = verdict
        if verdict == "FAIL" and cpu_ratio >= BAR:
            shown = "FAIL: error answers" if errors else "FAIL: the median passes, not every round"
        print(f"{name} / bare aiohttp proxy: {cpu_ratio:.2f}x by CPU time per request  "
              f"[{shown}: bar {BAR}x with every check on, on one core]{by_round(cpu_ratios)}")
        print(f"{name} / bare aiohttp proxy: {ratio:.2f}x requests/s{by_round(ratios)}")
        entry: dict[str, Any] = {"cpu_ratio": cpu_ratio, "cpu_ratio_by_round": cpu_ratios, "ratio": ratio,
                                 "ratio_by_round": ratios, "verdict": verdict}
        if NGINX in results:
            entry["nginx_ratio"], nginx_ratios = round_ratios(rounds, name, NGINX, "requests_per_second")
            print(f"{name} / nginx proxy: {entry['nginx_ratio']:.2f}x requests/s{by_round(nginx_ratios)}")
        verdicts[name] = entry
    for name in (n for n in (UNCHECKED, FLOOR) if n in results):  # no bar: what the design and the stack can reach
        cpu_ratio, cpu_ratios = round_ratios(rounds, BARE, name, "cpu_us_per_request")
        print(f"{name} / bare aiohttp proxy: {cpu_ratio:.2f}x by CPU time per request{by_round(cpu_ratios)}")
    for name, numbers in counts.items():
        if numbers:
            print(f"{name} metrics after the run: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(numbers.items())))
    verdict = "PASS" if all(v["verdict"] == "PASS" for v in verdicts.values()) else "FAIL"

    print()
    print("unloaded latency (1 connection; ms; median round; added = over the upstream direct, in each round):")
    for name, entry in unloaded.items():
        added = ""
        if name != UPSTREAM:
            added = (f"  added p50 {entry['added_p50_ms']:+.3f}  added p99 {entry['added_p99_ms']:+.3f}"
                     f"{by_round(entry['added_p50_ms_by_round'])}")
        print(f"  {name:<28} p50 {entry['p50_ms']:.3f}  p99 {entry['p99_ms']:.3f}{added}")
    if "skipped" in scaling:
        print(f"--workers 2 / --workers 1: not measured: {scaling['skipped']}")
    else:
        print(f"--workers 2 / --workers 1 (sqlite store): {scaling['ratio']:.2f}x requests/s{by_round(scaling['ratio_by_round'])}")

    warnings = []
    if any(r["non_2xx"] or r["errors"] for r in results.values()):
        warnings.append("some answers were not 2xx or connections failed: the numbers above are not comparable")
    for name in (BARE, *verdicts):
        busy = results[name]["cpu_busy"]
        if not math.isnan(busy) and busy < 0.9:
            warnings.append(f"{name} used only {busy:.0%} of its core: the load side (CPU {min(LOAD_CPU)}) or the machine "
                            f"limited it; trust the CPU-time ratio more than the requests/s ratio")
    noisy = [name for name in results if results[name]["others_busy"] > 0.1]
    if noisy:
        warnings.append("other programs on this machine used more than 10% of a core while measuring "
                        f"{', '.join(noisy)} ('others'): expect noise; more --rounds or a quiet machine help")
    for warning in warnings:
        print(f"warning: {warning}")

    if args.json:
        print(json.dumps(without_nan({
            "results": results,
            "upstream": upstream_kind,
            "load_generator": loader,
            "connections": args.connections,
            "duration_s": args.duration,
            "rounds": args.rounds,
            "slices": args.slices,
            "labgate": verdicts,
            "unloaded_latency": unloaded,
            "workers_scaling": scaling,
            "bar": BAR,
            "verdict": verdict,
            "labgate_metrics": counts,
            "warnings": warnings,
        })))
    return 1 if args.check and verdict == "FAIL" else 0
