"""Where labgate's CPU per request goes: ``python -m bench.profile [--store sqlite] [--rounds 3]``.

The same setup as :mod:`bench.run` (nginx or the Python upstream, the bench
pack, the request with every check on) with labgate started under
:mod:`bench.profiled_serve`.  One long load runs; within it, rounds alternate
an unprofiled window (the process's real CPU per request, from ``/proc``,
split into the event-loop thread and any other threads such as a store's
thread pool) and a profiled one.  The profile's shares of the event-loop
thread's time, by part of the request path, are scaled to the unprofiled CPU
per request, so every part is in real microseconds (the profiler's own
overhead falls roughly evenly per call and is scaled away with it).

Parts: a part's time is the cumulative time of the calls the request flow
(``proxy/gateway/app.py`` and the forwarder's orchestrating functions) makes
into it, plus, for the upstream exchange, the upstream connection's callbacks
from the event loop.  Whatever no part claims (aiohttp's server: parsing the
client's request and writing the answer; the event loop) is "server side".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import pstats
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import run as bench_run
from bench import upstream as bench_upstream

PARTS = ("server side", "request flow", "token verification/cache", "decision", "store checks",
         "metrics and logging", "upstream exchange")
# The request flow's own functions: their direct callees are split into the parts below.
_FLOW_FILES = ("proxy/gateway/app.py",)
_FLOW_FORWARDER = {"forward", "send", "_send_once", "record_use", "forward_public"}
_BY_FILE = (
    ("proxy/tokens/state.py", "store checks"),
    ("proxy/store/", "store checks"),
    ("proxy/gateway/client_token.py", "token verification/cache"),
    ("proxy/tokens/", "token verification/cache"),
    ("proxy/token_facts.py", "token verification/cache"),
    ("proxy/policy/", "decision"),
    ("proxy/gateway/request_shape.py", "decision"),
    ("proxy/gateway/routing.py", "decision"),
    ("proxy/ipaddrs.py", "decision"),
    ("proxy/paths.py", "decision"),
    ("proxy/metrics.py", "metrics and logging"),
    ("prometheus_client/", "metrics and logging"),
    ("proxy/gateway/recorder.py", "metrics and logging"),
    ("proxy/decision_log.py", "metrics and logging"),
    ("logging/", "metrics and logging"),
    ("proxy/gateway/forwarder.py", "upstream exchange"),
    ("proxy/gateway/headers.py", "upstream exchange"),
    ("proxy/gateway/http1.py", "upstream exchange"),
    ("proxy/gateway/http1_connection.py", "upstream exchange"),
    ("proxy/gateway/transport.py", "upstream exchange"),
)


def part_of(filename: str) -> str | None:
    path = filename.replace(os.sep, "/")
    for fragment, part in _BY_FILE:
        if fragment in path:
            return part
    return None


def is_flow(func: tuple[str, int, str]) -> bool:
    filename, _, name = func
    path = filename.replace(os.sep, "/")
    if any(path.endswith(f) for f in _FLOW_FILES):
        return True
    return path.endswith("proxy/gateway/forwarder.py") and name in _FLOW_FORWARDER


def split(stats_file: Path) -> dict[str, float]:
    """Seconds of the profiled window by part (their sum is the whole profiled time)."""
    raw: dict[Any, Any] = pstats.Stats(str(stats_file)).stats  # type: ignore[attr-defined]
    total = sum(entry[2] for entry in raw.values())
    parts = dict.fromkeys(PARTS, 0.0)
    for func, (_cc, _nc, tt, _ct, callers) in raw.items():
        if is_flow(func):
            parts["request flow"] += tt
            continue
        part = part_of(func[0])
        for caller, edge in callers.items():
            edge_ct = edge[3]
            if is_flow(caller):
                parts[part or "request flow"] += edge_ct
            elif part == "upstream exchange" and "proxy/" not in caller[0].replace(os.sep, "/"):
                parts[part] += edge_ct  # the upstream connection's callbacks, from the event loop
    parts["server side"] = max(0.0, total - sum(parts.values()))
    return parts


def thread_cpu(pid: int) -> tuple[float, float]:
    """CPU seconds of the main (event-loop) thread and of all other threads of ``pid``."""
    main = other = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        seconds = (int(fields[11]) + int(fields[12])) / ticks
        if int(task.name) == pid:
            main += seconds
        else:
            other += seconds
    return main, other


def decided(base_url: str) -> float:
    return sum(v for k, v in bench_run.labgate_counts(base_url).items() if k.startswith("decision"))


@contextlib.contextmanager
def labgate_profiled(directory: Path, store: str) -> Iterator[tuple[str, subprocess.Popen[bytes], str]]:
    """The upstream and labgate (under the profiler): labgate's URL, process and the token."""
    with contextlib.ExitStack() as stack:
        upstream_port, labgate_port, proxy_port = (bench_run.free_port() for _ in range(3))
        upstream_url = f"http://127.0.0.1:{upstream_port}"
        nginx = shutil.which("nginx")
        log = directory / "upstream.out"
        if nginx:
            conf, _ = bench_upstream.write_nginx_configs(directory, upstream_port, proxy_port)
            upstream = stack.enter_context(bench_run.process(bench_upstream.nginx_command(nginx, conf), bench_run.LOAD_CPU, log))
        else:
            upstream = stack.enter_context(bench_run.process(
                [sys.executable, "-m", "bench.upstream", "--port", str(upstream_port)], bench_run.LOAD_CPU, log))
        bench_run.wait_until_up(upstream_url + "/", upstream, log)
        extra = stack.enter_context(bench_run.store_service(directory, store))
        config = bench_run.write_labgate_config(directory, labgate_port, upstream_url, store=extra)
        log = directory / "labgate.out"
        command = [sys.executable, "-m", "bench.profiled_serve", str(directory / "labgate.prof"), "--",
                   *bench_run.labgate_command(config)[-5:]]
        labgate = stack.enter_context(bench_run.process(command, bench_run.PROXY_CPU, log))
        url = f"http://127.0.0.1:{labgate_port}"
        bench_run.wait_until_up(url + "/healthz", labgate, log)
        token = bench_run.mint()
        bench_run.check_labgate(url, token, log, directory)
        yield url, labgate, token


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=bench_run.STORES, default="sqlite", help="labgate's store (default sqlite)")
    parser.add_argument("--rounds", type=int, default=3, help="unprofiled + profiled windows (default 3)")
    parser.add_argument("--window", type=float, default=4.0, help="seconds per window (default 4)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--top", type=int, default=0, help="also list the N functions of most own time (last round)")
    parser.add_argument("--save", type=Path, help="keep the last profiled window's pstats file here")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    with tempfile.TemporaryDirectory(prefix="labgate-profile-") as temp:
        directory = Path(temp)
        with labgate_profiled(directory, args.store) as (url, labgate, token):
            seconds = 1 + args.rounds * (2 * args.window + 1) + 2
            loadgen = subprocess.Popen(
                [sys.executable, "-m", "bench.loadgen", "--url", f"{url}/svt{bench_run.TARGET}", "--duration",
                 str(seconds), "--warmup", "1", "--connections", str(args.connections),
                 "--header", f"Authorization: Bearer {token}"],
                preexec_fn=bench_run.pinned(bench_run.LOAD_CPU), stdout=subprocess.DEVNULL, cwd=bench_run.ROOT)
            rows = []
            try:
                time.sleep(1.5)
                for number in range(args.rounds):
                    rows.append(one_round(url, labgate.pid, directory, args.window, number))
                    print(f"  round {number + 1}: {rows[-1]['total']:.1f} us/request", file=sys.stderr)
            finally:
                loadgen.terminate()
                loadgen.wait(timeout=10)
            if args.top:
                pstats.Stats(str(directory / f"labgate.prof.{args.rounds - 1}"), stream=sys.stdout).sort_stats(
                    "tottime").print_stats(args.top)
            if args.save:
                shutil.copyfile(directory / f"labgate.prof.{args.rounds - 1}", args.save)
                shutil.copyfile(directory / f"labgate.prof.{args.rounds - 1}.gc.json", f"{args.save}.gc.json")
    print_table(rows, args.store)
    return 0


def one_round(url: str, pid: int, directory: Path, window: float, number: int) -> dict[str, float]:
    count0, (main0, other0) = decided(url), thread_cpu(pid)
    time.sleep(window)
    count1, (main1, other1) = decided(url), thread_cpu(pid)
    requests = max(1.0, count1 - count0 - 1)  # less the /metrics request itself
    main_us, other_us = (main1 - main0) / requests * 1e6, (other1 - other0) / requests * 1e6
    os.kill(pid, signal.SIGUSR1)
    time.sleep(window)
    os.kill(pid, signal.SIGUSR2)
    count2 = decided(url)
    stats = directory / "labgate.prof"
    for _ in range(50):
        if stats.exists():
            break
        time.sleep(0.1)
    time.sleep(0.3)
    parts = split(stats)
    stats.rename(directory / f"labgate.prof.{number}")
    Path(f"{stats}.gc.json").rename(directory / f"labgate.prof.{number}.gc.json")
    total = sum(parts.values()) or 1.0
    row = {part: seconds / total * main_us for part, seconds in parts.items()}
    row["store checks"] += other_us  # a store's thread pool works outside the event loop's thread
    row["other threads"] = other_us
    row["total"] = main_us + other_us
    row.update(calls_per_request(directory / f"labgate.prof.{number}", max(1.0, count2 - count1 - 1)))
    return row


def calls_per_request(stats_file: Path, requests: float) -> dict[str, float]:
    """Function calls per request in the profiled window: all, and Python functions only (C builtins left out).

    Unlike microseconds, a count the machine's load does not move: what a code change removed shows here.
    """
    raw: dict[Any, Any] = pstats.Stats(str(stats_file)).stats  # type: ignore[attr-defined]
    every = sum(entry[1] for entry in raw.values())
    python = sum(entry[1] for func, entry in raw.items() if func[0] != "~")
    collections = json.loads(Path(f"{stats_file}.gc.json").read_text()) if Path(f"{stats_file}.gc.json").exists() else {}
    return {"calls": every / requests, "python calls": python / requests,
            "gc collections": sum(collections.get("count", [])) / requests * 1000}


def print_table(rows: list[dict[str, float]], store: str) -> None:
    print(f"labgate CPU per request by part (store: {store}; µs, median of {len(rows)} round(s); every round)")
    print()
    print(f"{'part':<26} {'median':>7}  rounds")
    for part in (*PARTS, "total"):
        values = [r[part] for r in rows]
        print(f"{part:<26} {statistics.median(values):>7.1f}  " + " ".join(f"{v:.1f}" for v in values))
    others = [r["other threads"] for r in rows]
    print(f"(store checks include other threads' CPU: {' '.join(f'{v:.1f}' for v in others)} µs)")
    for key, label in (("calls", "function calls per request"), ("python calls", "Python function calls per request"),
                       ("gc collections", "garbage collections per 1,000 requests")):
        values = [r[key] for r in rows]
        print(f"{label}: {statistics.median(values):.1f} (rounds: {' '.join(f'{v:.1f}' for v in values)})")


if __name__ == "__main__":
    sys.exit(main())
