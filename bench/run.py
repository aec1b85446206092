"""Run the benchmark: ``python -m bench.run [--duration 10] [--connections 32] [--json] [--check]``.

Side by side, in one run, against one fast local upstream (nginx when
installed, else a Python upstream): the upstream direct, a bare aiohttp
pass-through proxy, labgate with every check on, and nginx as a proxy when
installed.  Each proxy is pinned to CPU 0; the upstream and the load
generator share CPU 1, so "one core" means one core.  Load comes from wrk
when installed, else from :mod:`bench.loadgen`.  See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable, Iterator

import jwt
import yaml

from bench import upstream as bench_upstream

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-hs256-secret-" + "x" * 45
ISSUER = "https://labgate.bench/issuer"
AUDIENCE = "simplivity"
BAR = 0.9  # labgate must reach this fraction of the bare proxy's throughput
TARGET = "/api/hosts?offset=0&limit=50"
DENIED_TARGET = "/api/hosts?offset=0&limit=50&sort=name"
PROXY_CPU, LOAD_CPU = {0}, {1}
GENERATED_ROUTES = 1000

UPSTREAM, BARE, LABGATE, NGINX = "upstream direct", "bare aiohttp proxy", "labgate (all checks)", "nginx proxy"


# -- processes ----------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinning_possible() -> bool:
    return hasattr(os, "sched_setaffinity") and (PROXY_CPU | LOAD_CPU) <= os.sched_getaffinity(0)


def pinned(cpus: set[int]) -> Callable[[], None] | None:
    """A preexec_fn pinning the child to ``cpus``, or None when this machine lacks them."""
    if not pinning_possible():
        return None
    return lambda: os.sched_setaffinity(0, cpus)


@contextlib.contextmanager
def process(args: list[str], cpus: set[int], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``args`` pinned to ``cpus`` (stdout and stderr to ``log``); terminate, then kill, at the end."""
    with open(log, "wb") as output:
        child = subprocess.Popen(args, preexec_fn=pinned(cpus), stdin=subprocess.DEVNULL, stdout=output,
                                 stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        yield child
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(timeout=5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(timeout=5)


def fail(message: str, log: Path | None = None) -> SystemExit:
    if log is not None and log.exists():
        tail = log.read_text(errors="replace").strip().splitlines()[-30:]
        message += f"\n--- last lines of {log.name} ---\n" + "\n".join(tail)
    return SystemExit(message)


DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an HTTP_PROXY


def get(url: str, token: str | None = None, timeout: float = 5.0) -> tuple[int, bytes]:
    """Status and body of a GET (error statuses included)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with DIRECT.open(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read()


def wait_until_up(url: str, child: subprocess.Popen[bytes], log: Path, seconds: float = 30.0) -> None:
    """Poll ``url`` until anything answers over HTTP; fail if the child exits or time runs out."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise fail(f"{' '.join(map(str, child.args))} exited with {child.returncode} at start", log)
        try:
            get(url, timeout=1)
            return
        except OSError:
            time.sleep(0.1)
    raise fail(f"nothing answered at {url} within {seconds:.0f} s", log)


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of a process (Linux /proc), None when unknown."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine_cpu() -> float | None:
    """User + system CPU time of all processes on the machine (Linux /proc/stat), None when unknown."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    except OSError:
        return None
    return (int(fields[1]) + int(fields[2]) + int(fields[3])) / os.sysconf("SC_CLK_TCK")


def our_cpu(pids: list[int]) -> float:
    """CPU time of the benchmark's own processes: these, this one, and its finished children (the load)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    total = own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
    return total + sum(cpu_seconds(pid) or 0.0 for pid in pids)


# -- what labgate runs --------------------------------------------------------


def bench_pack(rate_limit: bool = False) -> dict[str, Any]:
    """The shipped SimpliVity types; emergency grows an IP allowlist, deny rules and 1,000 more routes.

    ``rate_limit``: emergency also gets a rate limit the load never reaches, so every
    request pays for checking and spending its budget and none is refused.
    """
    shipped = yaml.safe_load((ROOT / "policies" / "simplivity.yaml").read_text())
    types = {name: dict(body) for name, body in shipped["token_types"].items()}
    emergency = types["emergency"]
    emergency["routes"] = list(emergency["routes"]) + [
        f"GET /api/generated{i}/{{id}}" for i in range(GENERATED_ROUTES)
    ]
    emergency["client_ips"] = ["127.0.0.0/8", "10.0.0.0 - 10.0.0.255"]
    emergency["deny"] = ["* /api/backups/{bkpId}/delete", "DELETE /api/hosts/{id}"]
    if rate_limit:
        emergency["rate_limit"] = {"requests": 1_000_000_000, "per": "1h"}
    return {
        "pack": "bench",
        "description": "benchmark pack: SimpliVity with a realistic-size emergency type",
        "paths": shipped.get("paths", "case-sensitive"),
        "token_types": types,
    }


def write_labgate_config(
    directory: Path, port: int, upstream_url: str, *, rate_limit: bool = False, store: str = "sqlite"
) -> Path:
    (directory / "bench.yaml").write_text(yaml.safe_dump(bench_pack(rate_limit), sort_keys=False))
    (directory / "hs256.secret").write_text(SECRET)
    config = {
        "listen": {"address": "127.0.0.1", "port": port},
        "policies": [str(ROOT / "policies"), "bench.yaml"],
        # Denials only: the realistic production setting (allowed requests are
        # counted in metrics, not logged one line each).
        "decision_log": "denials",
        "store": {"type": store},
        "upstreams": [
            {
                "name": "simplivity",
                "url": upstream_url,
                "path_prefix": "/svt",
                "pack": "bench",
                "timeouts": {"connect": 5, "read": 60},
                "token_source": {
                    "type": "jwt",
                    "algorithms": ["HS256"],
                    "keys": [{"kid": "bench", "algorithm": "HS256", "secret_file": "hs256.secret"}],
                    "issuer": ISSUER,
                    "audience": AUDIENCE,
                    "leeway": 30,
                    "types": [
                        {"token_type": "emergency", "match": {"grant_type": "emergency"}},
                        {"token_type": "password", "match": {"grant_type": "password"}},
                    ],
                },
            }
        ],
    }
    path = directory / "labgate.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def labgate_command(config: Path) -> list[str]:
    script = Path(sys.executable).parent / "labgate"
    if script.exists():
        command = [str(script)]
    else:
        command = [sys.executable, "-m", "proxy.cli"]
    return command + ["serve", "--config", str(config), "--log-level", "warning"]


def mint() -> str:
    """An HS256 token of the restricted type (emergency), valid for an hour."""
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "svtcli", "grant_type": "emergency", "iat": now, "exp": now + 3600}
    return jwt.encode(claims, SECRET, algorithm="HS256", headers={"kid": "bench"})


def labgate_counts(base_url: str) -> dict[str, float]:
    """Request decisions and token cache lookups from labgate's /metrics."""
    try:
        _, text = get(base_url + "/metrics")
    except OSError:
        return {}
    counts: dict[str, float] = {}
    for line in text.decode(errors="replace").splitlines():
        match = re.match(r"^(labgate_requests_total|labgate_token_cache_lookups_total)\{(.*)\}\s+(\S+)$", line)
        if not match:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2)))
        if match.group(1) == "labgate_requests_total":
            key = f"decision {labels.get('decision', '?')}"
        else:
            key = f"token cache {labels.get('result', '?')}"
        counts[key] = counts.get(key, 0.0) + float(match.group(3))
    return counts


# -- load ---------------------------------------------------------------------


def load(url: str, headers: list[str], duration: float, warmup: float, connections: int) -> dict[str, float]:
    if shutil.which("wrk"):
        return load_with_wrk(url, headers, duration, warmup, connections)
    command = [sys.executable, "-m", "bench.loadgen", "--url", url, "--duration", str(duration),
               "--warmup", str(warmup), "--connections", str(connections)]
    command += [a for h in headers for a in ("--header", h)]
    done = subprocess.run(command, preexec_fn=pinned(LOAD_CPU), capture_output=True, text=True, cwd=ROOT,
                          timeout=warmup + duration + 60)
    if done.returncode != 0:
        raise SystemExit(f"the load generator failed on {url}:\n{done.stderr.strip()}")
    return json.loads(done.stdout)  # type: ignore[no-any-return]


WRK_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def parse_wrk(text: str) -> dict[str, float]:
    def latency(percent: str) -> float:
        match = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M)
        return float(match.group(1)) * WRK_UNITS[match.group(2)] if match else math.nan

    total = re.search(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", text, re.M)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if not (total and rps):
        raise SystemExit(f"could not read wrk's output:\n{text}")
    return {
        "requests": int(total.group(1)),
        "requests_per_second": float(rps.group(1)),
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "errors": sum(int(n) for n in socket_errors.groups()) if socket_errors else 0,
        "requests_total": int(total.group(1)),
    }


def load_with_wrk(url: str, headers: list[str], duration: float, warmup: float, connections: int) -> dict[str, float]:
    def wrk(seconds: float) -> str:
        command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
        command += [a for h in headers for a in ("-H", h)] + [url]
        done = subprocess.run(command, preexec_fn=pinned(LOAD_CPU), capture_output=True, text=True,
                              timeout=seconds + 60)
        if done.returncode != 0:
            raise SystemExit(f"wrk failed on {url}:\n{done.stdout}{done.stderr}")
        return done.stdout

    warmed = parse_wrk(wrk(warmup))["requests"] if warmup > 0 else 0
    result = parse_wrk(wrk(duration))
    result["requests_total"] += warmed
    return result


# -- the run ------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds per target and round (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections (default 32)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of unmeasured load before each measurement (default 1)")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds over all targets, alternating; each target reports its median round (default 3)")
    parser.add_argument("--upstream-impl", choices=("httptools", "aiohttp"), default=bench_upstream.default_impl(),
                        help="the Python upstream when nginx is not installed (default: httptools when installed)")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    parser.add_argument("--check", action="store_true", help=f"exit 1 unless labgate reaches {BAR}x the bare proxy")
    parser.add_argument("--rate-limit", action="store_true",
                        help="give the emergency type a rate limit the load never reaches (the limiter's cost)")
    parser.add_argument("--store", choices=("sqlite", "memory"), default="sqlite", help="labgate's store (default sqlite)")
    args = parser.parse_args()
    if args.rounds < 1 or args.duration <= 0 or args.connections < 1:
        parser.error("--rounds, --duration and --connections must be positive")

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

        log = directory / "labgate.out"
        config = write_labgate_config(directory, labgate_port, upstream_url, rate_limit=args.rate_limit, store=args.store)
        labgate = stack.enter_context(process(labgate_command(config), PROXY_CPU, log))
        labgate_url = f"http://127.0.0.1:{labgate_port}"
        wait_until_up(labgate_url + "/healthz", labgate, log)
        # Never measure error answers: the request under load must pass every
        # check and reach the upstream, and a request breaking a rule must not.
        expect_body(LABGATE, get(f"{labgate_url}/svt{TARGET}", token), log)
        denied, body = get(f"{labgate_url}/svt{DENIED_TARGET}", token)
        if denied != 403:
            raise fail(f"labgate answered {denied} to {DENIED_TARGET} (want 403): its checks are not on\n{body[:300]!r}", log)
        pids[LABGATE] = labgate.pid

        targets = [
            (UPSTREAM, f"{upstream_url}{TARGET}", auth),
            (BARE, f"{bare_url}{TARGET}", auth),  # the very request bytes labgate gets
            (LABGATE, f"{labgate_url}/svt{TARGET}", auth),
        ]
        if nginx:
            log = directory / "nginx-proxy.out"
            nginx_proxy = stack.enter_context(process(bench_upstream.nginx_command(nginx, proxy_conf), PROXY_CPU, log))
            nginx_url = f"http://127.0.0.1:{nginx_proxy_port}"
            wait_until_up(nginx_url + "/", nginx_proxy, log)
            expect_body(NGINX, get(nginx_url + TARGET, token), log)
            pids[NGINX] = nginx_proxy.pid
            targets.append((NGINX, f"{nginx_url}{TARGET}", auth))

        print(f"{args.rounds} round(s) x {len(targets)} targets x ({args.warmup:g} s warm-up + {args.duration:g} s); "
              f"about {args.rounds * len(targets) * (args.warmup + args.duration + 0.5):.0f} s", file=sys.stderr)
        # Rounds alternate between targets so that a noisy moment of the
        # machine hurts all of them alike; each target reports its median round.
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in targets}
        ours = [upstream.pid, *pids.values()]
        for number in range(args.rounds):
            for name, url, headers in targets:
                pid = pids.get(name)
                before, ours_before, machine_before = cpu_seconds(pid), our_cpu(ours), machine_cpu()
                started = time.monotonic()
                result = load(url, headers, args.duration, args.warmup, args.connections)
                wall = time.monotonic() - started
                after, ours_after, machine_after = cpu_seconds(pid), our_cpu(ours), machine_cpu()
                if before is not None and after is not None and result["requests_total"]:
                    used = after - before
                    # CPU per request (warm-up included on both sides): one core's capacity,
                    # whatever the neighbours did. Busy: the share of its core the proxy used.
                    result["cpu_us_per_request"] = used / result["requests_total"] * 1e6
                    result["cpu_busy"] = used / (args.warmup + args.duration)
                else:
                    result["cpu_us_per_request"] = result["cpu_busy"] = math.nan
                # What other programs on the machine used meanwhile, in cores: noise.
                if machine_before is not None and machine_after is not None:
                    others = (machine_after - machine_before) - (ours_after - ours_before)
                    result["others_busy"] = max(0.0, others) / wall
                else:
                    result["others_busy"] = math.nan
                rounds[name].append(result)
                print(f"  round {number + 1}: {name:<22} {result['requests_per_second']:>9.0f} req/s", file=sys.stderr)
        results = {name: median_round(runs) for name, runs in rounds.items()}
        counts = labgate_counts(labgate_url)
        if labgate.poll() is not None:
            raise fail(f"labgate exited with {labgate.returncode} during the run", directory / "labgate.out")

    return report(results, rounds, counts, upstream_kind, args)


def expect_body(name: str, answer: tuple[int, bytes], log: Path | None = None) -> None:
    status, body = answer
    if status != 200 or body != bench_upstream.BODY:
        raise fail(f"{name} answered {status} with {body[:300]!r}, not 200 with the upstream's body: not benchmarking that", log)


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


def report(results: dict[str, dict[str, Any]], rounds: dict[str, list[dict[str, float]]], counts: dict[str, float],
           upstream_kind: str, args: argparse.Namespace) -> int:
    loader = "wrk -t1" if shutil.which("wrk") else "bench.loadgen"
    placement = (f"proxies pinned to CPU {min(PROXY_CPU)}, upstream and load generator to CPU {min(LOAD_CPU)}"
                 if pinning_possible() else "no CPU pinning (fewer than 2 usable CPUs): ratios are still comparable, 'one core' is not")
    print(f"labgate benchmark: GET /svt{TARGET} with an HS256 bearer token; upstream: {upstream_kind}; load: {loader}")
    print(f"{args.connections} connections; {args.rounds} round(s) of {args.warmup:g} s warm-up + {args.duration:g} s "
          f"measured per target (median round shown); {placement}")
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
    lab = results[LABGATE]
    ratio, ratios = round_ratios(rounds, LABGATE, BARE, "requests_per_second")
    cpu_ratio, cpu_ratios = round_ratios(rounds, BARE, LABGATE, "cpu_us_per_request")
    # Error answers from labgate would be cheap answers: they cannot pass the bar.
    verdict = "PASS" if ratio >= BAR and not (lab["non_2xx"] or lab["errors"]) else "FAIL"
    print(f"labgate / bare aiohttp proxy: {ratio:.2f}x requests/s  "
          f"[{verdict}: bar {BAR}x with every check on, on one core]{by_round(ratios)}")
    if not math.isnan(cpu_ratio):
        print(f"labgate / bare aiohttp proxy: {cpu_ratio:.2f}x by CPU time per request (one core's capacity)"
              f"{by_round(cpu_ratios)}")
    nginx_ratio = None
    if NGINX in results:
        nginx_ratio, nginx_ratios = round_ratios(rounds, LABGATE, NGINX, "requests_per_second")
        print(f"labgate / nginx proxy:        {nginx_ratio:.2f}x requests/s{by_round(nginx_ratios)}")
    if counts:
        print("labgate metrics after the run: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(counts.items())))

    warnings = []
    if any(r["non_2xx"] or r["errors"] for r in results.values()):
        warnings.append("some answers were not 2xx or connections failed: the numbers above are not comparable")
    for name in (BARE, LABGATE):
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
            "ratio_labgate_to_bare": ratio,
            "ratio_labgate_to_bare_by_round": ratios,
            "cpu_ratio_labgate_to_bare": None if math.isnan(cpu_ratio) else cpu_ratio,
            "ratio_labgate_to_nginx": nginx_ratio,
            "bar": BAR,
            "verdict": verdict,
            "labgate_metrics": counts,
            "warnings": warnings,
        })))
    return 1 if args.check and verdict == "FAIL" else 0


if __name__ == "__main__":
    sys.exit(main())
