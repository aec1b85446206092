"""Run the benchmark: ``python -m bench.run [--duration 10] [--stores memory,sqlite,redis] [--json] [--check]``.

Side by side, in alternating rounds, against one fast local upstream (nginx
when installed, else a Python upstream): the upstream direct, a bare aiohttp
pass-through proxy, labgate with every check on for each store (memory,
SQLite, Redis with a redis-server of its own), and nginx as a proxy when
installed.  Each proxy is pinned to CPU 0; the upstream and the load
generator share CPU 1, so "one core" means one core.  Load comes from wrk
when installed, else from :mod:`bench.loadgen`.  Then the latency each proxy
adds with one connection, and ``--workers 2`` against ``--workers 1`` where
there are cores for it.  See bench/README.md."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import upstream as bench_upstream
from bench.labgate_setup import (
    DENIED_TARGET,
    LABGATE,
    SECRET,
    STORES,
    TARGET,
    check_labgate,
    expect_body,
    labgate_command,
    labgate_counts,
    labgate_name,
    mint,
    serve_args,
    store_service,
    write_labgate_config,
)
from bench.processes import (
    LOAD_CPU,
    PROXY_CPU,
    ROOT,
    cpu_seconds,
    fail,
    free_port,
    get,
    load,
    machine_cpu,
    our_cpu,
    pinned,
    process,
    wait_until_up,
)
from bench.report import BAR, BARE, FLOOR, NGINX, UNCHECKED, UPSTREAM, median_or_nan, median_round, report

__all__ = ["DENIED_TARGET", "LABGATE", "ROOT", "STORES", "TARGET", "check_labgate", "fail", "get", "labgate_command",
           "labgate_counts", "main", "mint", "pinned", "process", "store_service", "wait_until_up", "write_labgate_config"]



# -- the run ------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per target and round (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections (default 32)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of unmeasured load before each measurement (default 1)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds over all targets, alternating; each target reports its median round (default 3)")
    parser.add_argument("--slices", type=int, default=4,
                        help="each target's share of a round, measured in this many interleaved slices (default 4)")
    parser.add_argument("--upstream-impl", choices=("httptools", "aiohttp"), default=bench_upstream.default_impl(),
                        help="the Python upstream when nginx is not installed (default: httptools when installed)")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    parser.add_argument("--check", action="store_true",
                        help=f"exit 1 unless labgate on every store reaches {BAR}x the bare proxy by CPU time per request")
    parser.add_argument("--rate-limit", action="store_true",
                        help="give the emergency type a rate limit the load never reaches (the limiter's cost)")
    parser.add_argument("--floor", action="store_true",
                        help="also measure bench/floor_proxy.py: aiohttp's server on uvloop doing almost nothing (the stack's floor)")
    parser.add_argument("--unchecked", action="store_true",
                        help="also measure labgate with its checks taken out (bench/unchecked_serve.py, memory store): "
                             "the most this design can reach")
    parser.add_argument("--stores", default="memory,sqlite,redis",
                        help="labgate's stores, comma-separated, each its own target (default memory,sqlite,redis)")
    args = parser.parse_args()
    if args.rounds < 1 or args.slices < 1 or args.duration <= 0 or args.connections < 1:
        parser.error("--rounds, --slices, --duration and --connections must be positive")
    args.stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    if not args.stores or any(s not in STORES for s in args.stores):
        parser.error(f"--stores takes some of {', '.join(STORES)}")

    # A plain SIGTERM would skip the finally blocks that stop the children.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    token = mint()
    auth = [f"Authorization: Bearer {token}"]
    with tempfile.TemporaryDirectory(prefix="labgate-bench-") as temp, contextlib.ExitStack() as stack:
        directory = Path(temp)
        upstream_port, bare_port, labgate_port, nginx_proxy_port = (free_port() for _ in range(4))
        upstream_url = f"http://127.0.0.1:{upstream_port}"
        nginx = shutil.which("nginx")
        pids: dict[str, int] = {}
        processes: dict[str, subprocess.Popen[bytes]] = {}

        # The upstream, on the load generator's CPU.
        if nginx:
            upstream_conf, proxy_conf = bench_upstream.write_nginx_configs(directory, upstream_port, nginx_proxy_port)
            log = directory / "nginx-upstream.out"
            upstream = stack.enter_context(process(bench_upstream.nginx_command(nginx, upstream_conf), LOAD_CPU, log))
            upstream_kind = "nginx"
        else:
            log = directory / "upstream.out"
            upstream = stack.enter_context(process(
                [sys.executable, "-m", "bench.upstream", "--port", str(upstream_port), "--impl", args.upstream_impl],
                LOAD_CPU, log,
            ))
            upstream_kind = args.upstream_impl
        wait_until_up(upstream_url + "/", upstream, log)
        expect_body(UPSTREAM, get(upstream_url + TARGET))

        # The proxies, each on CPU 0 (they run one at a time under load).
        log = directory / "bare.out"
        bare = stack.enter_context(process(
            [sys.executable, "-m", "bench.bare_proxy", "--listen-port", str(bare_port), "--upstream", upstream_url],
            PROXY_CPU, log,
        ))
        bare_url = f"http://127.0.0.1:{bare_port}"
        wait_until_up(bare_url + "/", bare, log)
        expect_body(BARE, get(bare_url + TARGET, token))
        pids[BARE] = bare.pid

        labgates: dict[str, str] = {}
        for store in args.stores:
            name = labgate_name(store)
            log = directory / f"labgate-{store}.out"
            settings = stack.enter_context(store_service(directory, store))
            port = free_port()
            config = write_labgate_config(directory, port, upstream_url, store=settings, name=f"labgate-{store}.yaml",
                                          rate_limit=args.rate_limit)
            labgate = stack.enter_context(process(labgate_command(config), PROXY_CPU, log))
            labgate_url = f"http://127.0.0.1:{port}"
            wait_until_up(labgate_url + "/healthz", labgate, log)
            # Never measure error answers: the request under load must pass every
            # check and reach the upstream, and requests breaking a rule must not.
            check_labgate(labgate_url, token, log, directory, config)
            pids[name] = labgate.pid
            labgates[name] = labgate_url
            processes[name] = labgate

        targets = [
            (UPSTREAM, f"{upstream_url}{TARGET}", auth),
            (BARE, f"{bare_url}{TARGET}", auth),  # the very request bytes labgate gets
            *((name, f"{url}/svt{TARGET}", auth) for name, url in labgates.items()),
        ]
        if args.floor:
            floor_port = free_port()
            log = directory / "floor.out"
            floor = stack.enter_context(process(
                [sys.executable, "-m", "bench.floor_proxy", "--listen-port", str(floor_port), "--upstream-port",
                 str(upstream_port), "--secret", SECRET], PROXY_CPU, log,
            ))
            floor_url = f"http://127.0.0.1:{floor_port}"
            wait_until_up(floor_url + "/", floor, log)
            expect_body(FLOOR, get(f"{floor_url}/svt{TARGET}", token), log)
            pids[FLOOR] = floor.pid
            targets.append((FLOOR, f"{floor_url}/svt{TARGET}", auth))
        if args.unchecked:
            port, log = free_port(), directory / "unchecked.out"
            config = write_labgate_config(directory, port, upstream_url, store={"type": "memory"}, name="unchecked.yaml")
            unchecked = stack.enter_context(process(
                [sys.executable, "-m", "bench.unchecked_serve", "--", *serve_args(config)], PROXY_CPU, log,
            ))
            unchecked_url = f"http://127.0.0.1:{port}"
            wait_until_up(unchecked_url + "/healthz", unchecked, log)
            expect_body(UNCHECKED, get(f"{unchecked_url}/svt{TARGET}", token), log)  # it checks nothing: only the answer
            pids[UNCHECKED] = unchecked.pid
            processes[UNCHECKED] = unchecked  # like labgate's: an exit during the run stops the report
            targets.append((UNCHECKED, f"{unchecked_url}/svt{TARGET}", auth))
        if nginx:
            log = directory / "nginx-proxy.out"
            nginx_proxy = stack.enter_context(process(bench_upstream.nginx_command(nginx, proxy_conf), PROXY_CPU, log))
            nginx_url = f"http://127.0.0.1:{nginx_proxy_port}"
            wait_until_up(nginx_url + "/", nginx_proxy, log)
            expect_body(NGINX, get(nginx_url + TARGET, token), log)
            pids[NGINX] = nginx_proxy.pid
            targets.append((NGINX, f"{nginx_url}{TARGET}", auth))

        print(f"{args.rounds} round(s) x {len(targets)} targets x ({args.warmup:g} s warm-up + {args.duration:g} s "
              f"in {args.slices} slice(s)); about "
              f"{args.rounds * len(targets) * (args.warmup + args.duration + 0.3 * args.slices):.0f} s", file=sys.stderr)
        # Rounds alternate between targets so that a noisy moment of the machine hurts all
        # of them alike; within a round each target is measured in --slices short slices,
        # interleaved with the others', so that its figure spans the whole round as theirs do.
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in targets}
        ours = [upstream.pid, *pids.values()]
        for number in range(args.rounds):
            slices: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in targets}
            for part in range(args.slices):
                for name, url, headers in targets:
                    warmup = args.warmup if part == 0 else 0.0  # the proxy stays warm between slices
                    slices[name].append(measure(url, headers, pids.get(name), ours, args.duration / args.slices, warmup, args))
            for name, measured in slices.items():
                rounds[name].append(joined(measured))
                print(f"  round {number + 1}: {name:<22} {rounds[name][-1]['requests_per_second']:>9.0f} req/s", file=sys.stderr)
        results = {name: median_round(runs) for name, runs in rounds.items()}
        unloaded = unloaded_latency(targets, args)
        scaling = workers_scaling(stack, directory, upstream_url, token, args)
        counts = {name: labgate_counts(url) for name, url in labgates.items()}
        for name, child in processes.items():
            if child.poll() is not None:
                raise fail(f"{name} exited with {child.returncode} during the run")

    return report(results, rounds, counts, upstream_kind, args, unloaded, scaling)


def measure(url: str, headers: list[str], pid: int | None, ours: list[int], duration: float, warmup: float,
            args: argparse.Namespace) -> dict[str, float]:
    """One load run against one target, with the CPU its process used and what other programs used meanwhile."""
    before, ours_before, machine_before = cpu_seconds(pid), our_cpu(ours), machine_cpu()
    started = time.monotonic()
    result = load(url, headers, duration, warmup, args.connections)
    wall = time.monotonic() - started
    after, ours_after, machine_after = cpu_seconds(pid), our_cpu(ours), machine_cpu()
    # CPU per request counts the warm-up on both sides; busy is the share of its core the proxy used.
    result["cpu_seconds"] = after - before if before is not None and after is not None else math.nan
    result["seconds"] = warmup + duration
    # What other programs on the machine used meanwhile, in cores: noise.
    others = math.nan
    if machine_before is not None and machine_after is not None:
        others = max(0.0, (machine_after - machine_before) - (ours_after - ours_before))
    result["others_seconds"], result["wall"] = others, wall
    return result


def joined(slices: list[dict[str, float]]) -> dict[str, float]:
    """One target's round from its slices: counts and CPU summed; latency percentiles, the median slice's."""
    total = sum(s["requests_total"] for s in slices)
    cpu, seconds, wall = sum(s["cpu_seconds"] for s in slices), sum(s["seconds"] for s in slices), sum(s["wall"] for s in slices)
    measured = sum(s["requests"] for s in slices)
    return {
        "requests": measured,
        "requests_total": total,
        "requests_per_second": sum(s["requests_per_second"] for s in slices) / len(slices),
        "p50_ms": median_or_nan([s["p50_ms"] for s in slices]),
        "p99_ms": median_or_nan([s["p99_ms"] for s in slices]),
        "non_2xx": sum(s["non_2xx"] for s in slices),
        "errors": sum(s["errors"] for s in slices),
        "cpu_us_per_request": cpu / total * 1e6 if total and not math.isnan(cpu) else math.nan,
        "cpu_busy": cpu / seconds if seconds else math.nan,
        "others_busy": sum(s["others_seconds"] for s in slices) / wall if wall else math.nan,
    }


def unloaded_latency(targets: list[tuple[str, str, list[str]]], args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """p50 and p99 with one connection, alternating rounds; for proxies, what they add over the upstream direct."""
    seconds = min(args.duration, 5.0)
    rounds: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in targets}
    for number in range(args.rounds):
        for name, url, headers in targets:
            rounds[name].append(load(url, headers, seconds, min(args.warmup, 0.5), 1))
        print(f"  unloaded round {number + 1} done", file=sys.stderr)
    direct = rounds[UPSTREAM]
    answer: dict[str, dict[str, Any]] = {}
    for name, runs in rounds.items():
        entry: dict[str, Any] = {}
        for key in ("p50_ms", "p99_ms"):
            entry[key] = median_or_nan([r[key] for r in runs])
            if name != UPSTREAM:
                added = [r[key] - d[key] for r, d in zip(runs, direct)]
                entry[f"added_{key}"], entry[f"added_{key}_by_round"] = median_or_nan(added), added
        answer[name] = entry
    return answer


def workers_scaling(stack: contextlib.ExitStack, directory: Path, upstream_url: str, token: str,
                    args: argparse.Namespace) -> dict[str, Any]:
    """Throughput of ``--workers 2`` against ``--workers 1`` (SQLite store), when the machine has the cores.

    Two workers need two cores of their own and the load generator and upstream
    a third; with fewer CPUs the comparison would measure the contention, so it
    is skipped and the report says why.
    """
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(cpus) < 3:
        return {"skipped": f"needs 3 CPUs (2 for the workers, 1 for load and upstream); this machine has {len(cpus) or '?'}"}
    proxy_cpus, load_cpus = set(cpus[:2]), set(cpus[2:])
    urls = {}
    for workers in (1, 2):
        port = free_port()
        config = write_labgate_config(directory, port, upstream_url, name=f"labgate-workers{workers}.yaml")
        log = directory / f"labgate-workers{workers}.out"
        command = [*labgate_command(config), "--workers", str(workers)]
        child = stack.enter_context(process(command, proxy_cpus, log))
        urls[workers] = f"http://127.0.0.1:{port}"
        wait_until_up(urls[workers] + "/healthz", child, log)
        expect_body(LABGATE, get(f"{urls[workers]}/svt{TARGET}", token), log)
    by_round: dict[int, list[float]] = {1: [], 2: []}
    for _ in range(args.rounds):
        for workers, url in urls.items():
            result = load(f"{url}/svt{TARGET}", [f"Authorization: Bearer {token}"], args.duration, args.warmup,
                          args.connections, load_cpus)
            by_round[workers].append(result["requests_per_second"])
    ratios = [two / one if one else math.nan for one, two in zip(by_round[1], by_round[2])]
    return {"workers_1_rps": by_round[1], "workers_2_rps": by_round[2], "ratio": median_or_nan(ratios),
            "ratio_by_round": ratios}


if __name__ == "__main__":
    sys.exit(main())
