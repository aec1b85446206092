"""Run the benchmark: ``python -m bench.run [--duration 10] [--connections 32] [--json] [--check]``.

Side by side, in one run, against one fast local upstream (nginx when
installed, else an aiohttp upstream): the upstream direct, a bare aiohttp
pass-through proxy, labgate with every check on, and nginx as a proxy when
installed.  Each proxy is pinned to CPU 0; the upstream and the load
generator share CPU 1, so "one core" means one core.  Load comes from wrk when
installed, else from :mod:`bench.loadgen`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Iterator

import jwt
import yaml

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-" + "x" * 40
ISSUER = "https://labgate.bench/"
AUDIENCE = "simplivity"
BAR = 0.9  # labgate must reach this fraction of the bare proxy's throughput
TARGET = "/api/hosts?offset=0&limit=50"
PROXY_CPU, LOAD_CPU = {0}, {1}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cpus: set[int]):  # type: ignore[no-untyped-def]
    """A preexec_fn pinning the child to ``cpus`` when the machine has them."""
    usable = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
    if not cpus <= usable or len(usable) < 2:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


@contextlib.contextmanager
def process(args: list[str], cpus: set[int], **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    child = subprocess.Popen(args, preexec_fn=pinned(cpus), stdout=subprocess.DEVNULL, **kwargs)  # type: ignore[call-overload]
    try:
        yield child
    finally:
        child.terminate()
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def wait_until_up(url: str, child: subprocess.Popen[bytes], seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise SystemExit(f"{child.args!r} exited with {child.returncode} at start")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing answered at {url} within {seconds:.0f}s")


def status_of(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


# -- what labgate runs --------------------------------------------------------


def bench_pack() -> dict[str, object]:
    """The shipped SimpliVity emergency type plus an IP rule, a deny rule and 1,000 more routes."""
    shipped = yaml.safe_load((ROOT / "policies" / "simplivity.yaml").read_text())
    emergency = dict(shipped["token_types"]["emergency"])
    emergency["routes"] = list(emergency["routes"]) + [f"GET /api/generated{i}/{{id}}" for i in range(1000)]
    emergency["client_ips"] = ["127.0.0.0/8", "10.0.0.0 - 10.0.0.255", "2001:db8::/32"]
    emergency["deny"] = ["* /api/backups/{bkpId}/delete", "DELETE /api/hosts/{id}"]
    return {"pack": "bench", "description": "benchmark pack", "token_types": {"emergency": emergency}}


def write_labgate_config(directory: Path, port: int, upstream_url: str) -> Path:
    (directory / "bench.yaml").write_text(yaml.safe_dump(bench_pack(), sort_keys=False, allow_unicode=True))
    (directory / "hs256.secret").write_text(SECRET)
    config = {
        "listen": {"address": "127.0.0.1", "port": port},
        "policies": ["bench.yaml"],
        "decision_log": "denials",
        "upstreams": [
            {
                "name": "simplivity",
                "url": upstream_url,
                "path_prefix": "/svt",
                "pack": "bench",
                "token_source": {
                    "type": "jwt",
                    "algorithms": ["HS256"],
                    "keys": [{"kid": "bench", "algorithm": "HS256", "secret_file": "hs256.secret"}],
                    "issuer": ISSUER,
                    "audience": AUDIENCE,
                    "types": [{"token_type": "emergency", "match": {"grant_type": "emergency"}}],
                },
            }
        ],
    }
    path = directory / "labgate.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def mint() -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "bench", "grant_type": "emergency", "iat": now, "exp": now + 3600}
    return jwt.encode(claims, SECRET, algorithm="HS256", headers={"kid": "bench"})


# -- nginx, when installed ------------------------------------------------------


NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body; proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi; uwsgi_temp_path {dir}/uwsgi; scgi_temp_path {dir}/scgi;
    upstream appliance {{ server 127.0.0.1:{upstream_port}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{upstream_port};
        location / {{ default_type application/json; return 200 '{body}'; }}
    }}
    server {{
        listen 127.0.0.1:{proxy_port};
        location / {{ proxy_pass http://appliance; proxy_http_version 1.1; proxy_set_header Connection ""; }}
    }}
}}
"""


def cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process (Linux /proc), 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- load ---------------------------------------------------------------------


def load(url: str, headers: list[str], duration: float, connections: int) -> dict[str, float]:
    if shutil.which("wrk"):
        return load_with_wrk(url, headers, duration, connections)
    command = [sys.executable, "-m", "bench.loadgen", "--url", url, "--duration", str(duration),
               "--connections", str(connections)] + [a for h in headers for a in ("--header", h)]
    output = subprocess.run(command, preexec_fn=pinned(LOAD_CPU), capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(output.stdout)  # type: ignore[no-any-return]


def load_with_wrk(url: str, headers: list[str], duration: float, connections: int) -> dict[str, float]:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{int(duration)}s", "--latency"]
    command += [a for h in headers for a in ("-H", h)] + [url]
    text = subprocess.run(command, preexec_fn=pinned(LOAD_CPU), capture_output=True, text=True, check=True).stdout
    units = {"us": 1e-3, "ms": 1.0, "s": 1e3}

    def latency(percent: str) -> float:
        match = re.search(rf"^\s*{percent}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)
        return float(match.group(1)) * units[match.group(2)] if match else float("nan")

    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    return {
        "requests_per_second": float(rps.group(1)) if rps else 0.0,
        "p50_ms": latency("50"),
        "p99_ms": latency("99"),
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "errors": 0,
    }


# -- the run ------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per target (default 10)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent keep-alive connections (default 32)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per target; the median counts (default 3)")
    parser.add_argument("--json", action="store_true", help="also print the results as one JSON object")
    parser.add_argument("--check", action="store_true", help=f"exit 1 unless labgate reaches {BAR}x the bare proxy")
    args = parser.parse_args()

    token = mint()
    auth = [f"Authorization: Bearer {token}"]
    with tempfile.TemporaryDirectory(prefix="labgate-bench-") as temp, contextlib.ExitStack() as stack:
        directory = Path(temp)
        upstream_port, bare_port, labgate_port, nginx_proxy_port = (free_port() for _ in range(4))
        nginx = shutil.which("nginx")
        if nginx:
            from bench.upstream import BODY

            conf = directory / "nginx.conf"
            conf.write_text(NGINX_CONF.format(dir=directory, upstream_port=upstream_port, proxy_port=nginx_proxy_port,
                                              body=BODY.decode()))
            upstream = stack.enter_context(process([nginx, "-c", str(conf), "-p", str(directory)], LOAD_CPU))
            upstream_kind = "nginx"
        else:
            upstream = stack.enter_context(
                process([sys.executable, "-m", "bench.upstream", "--port", str(upstream_port)], LOAD_CPU, cwd=ROOT)
            )
            upstream_kind = "aiohttp"
        upstream_url = f"http://127.0.0.1:{upstream_port}"
        wait_until_up(upstream_url + "/", upstream)

        bare = stack.enter_context(process(
            [sys.executable, "-m", "bench.bare_proxy", "--port", str(bare_port), "--upstream", upstream_url],
            PROXY_CPU, cwd=ROOT,
        ))
        wait_until_up(f"http://127.0.0.1:{bare_port}/", bare)

        config = write_labgate_config(directory, labgate_port, upstream_url)
        labgate = stack.enter_context(process(
            [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config), "--log-level", "warning"],
            PROXY_CPU, cwd=ROOT,
        ))
        labgate_url = f"http://127.0.0.1:{labgate_port}"
        wait_until_up(labgate_url + "/healthz", labgate)
        # Never measure error answers: the request must pass every check, and a bad one must not.
        allowed = status_of(f"{labgate_url}/svt{TARGET}", token)
        denied = status_of(f"{labgate_url}/svt{TARGET}&sort=name", token)
        if (allowed, denied) != (200, 403):
            raise SystemExit(f"labgate answered {allowed} (want 200) and {denied} (want 403): not benchmarking that")

        targets = [
            (f"upstream direct ({upstream_kind})", f"{upstream_url}{TARGET}", []),
            # The same request bytes as labgate gets, bearer token included.
            ("bare aiohttp proxy", f"http://127.0.0.1:{bare_port}{TARGET}", auth),
            ("labgate (all checks)", f"{labgate_url}/svt{TARGET}", auth),
        ]
        if nginx:
            targets.append(("nginx proxy", f"http://127.0.0.1:{nginx_proxy_port}{TARGET}", []))
        # Rounds alternate between targets so a noisy moment hurts them all alike;
        # each target reports its median round.
        pids = {targets[1][0]: bare.pid, targets[2][0]: labgate.pid}
        rounds: dict[str, list[dict[str, float]]] = {name: [] for name, _, _ in targets}
        for _ in range(args.rounds):
            for name, url, headers in targets:
                before = cpu_seconds(pids.get(name))
                result = load(url, headers, args.duration, args.connections)
                used = cpu_seconds(pids.get(name)) - before
                # CPU per request: what one core can do, whatever the neighbours did.
                result["cpu_us_per_request"] = used / result["requests"] * 1e6 if pids.get(name) and result["requests"] else float("nan")
                rounds[name].append(result)
        results = {name: median_round(runs) for name, runs in rounds.items()}

    return report(results, args)


def median_round(runs: list[dict[str, float]]) -> dict[str, float]:
    """The round with the median throughput, with errors summed over all rounds."""
    ordered = sorted(runs, key=lambda r: r["requests_per_second"])
    chosen = dict(ordered[len(ordered) // 2])
    chosen["non_2xx"] = sum(r["non_2xx"] for r in runs)
    chosen["errors"] = sum(r["errors"] for r in runs)
    chosen["all_rounds_rps"] = [round(r["requests_per_second"]) for r in runs]  # type: ignore[assignment]
    return chosen


def report(results: dict[str, dict[str, float]], args: argparse.Namespace) -> int:
    loader = "wrk" if shutil.which("wrk") else "bench.loadgen"
    print(f"{args.rounds} rounds of {args.duration:.0f} s per target (median shown), {args.connections} connections, load from {loader}; "
          f"proxies on CPU {sorted(PROXY_CPU)}, upstream and load on CPU {sorted(LOAD_CPU)}")
    print(f"{'target':<28} {'req/s':>10} {'p50 ms':>8} {'p99 ms':>8} {'non-2xx':>8} {'errors':>7} {'CPU us/req':>10}  rounds req/s")
    for name, r in results.items():
        print(f"{name:<28} {r['requests_per_second']:>10.0f} {r['p50_ms']:>8.2f} {r['p99_ms']:>8.2f} "
              f"{int(r['non_2xx']):>8} {int(r['errors']):>7} {r['cpu_us_per_request']:>10.0f}  {r['all_rounds_rps']}")
    lab, bare_proxy = results["labgate (all checks)"], results["bare aiohttp proxy"]
    ratio = lab["requests_per_second"] / bare_proxy["requests_per_second"] if bare_proxy["requests_per_second"] else 0.0
    cpu_ratio = bare_proxy["cpu_us_per_request"] / lab["cpu_us_per_request"] if lab["cpu_us_per_request"] else 0.0
    labgate = lab["requests_per_second"]
    verdict = "PASS" if ratio >= BAR else "FAIL"
    print(f"labgate / bare aiohttp proxy: {ratio:.2f}x measured throughput ({verdict}: bar {BAR}x); "
          f"{cpu_ratio:.2f}x by CPU time per request (the one-core capacity)")
    if "nginx proxy" in results:
        nginx = results["nginx proxy"]["requests_per_second"]
        print(f"labgate / nginx proxy: {labgate / nginx:.2f}x")
    if args.json:
        print(json.dumps({"results": results, "ratio_to_bare": ratio, "cpu_ratio_to_bare": cpu_ratio, "bar": BAR, "verdict": verdict}))
    clean = all(r["non_2xx"] == 0 and r["errors"] == 0 for r in results.values())
    if not clean:
        print("warning: some answers were errors; the numbers above are not comparable")
    return 1 if args.check and (verdict == "FAIL" or not clean) else 0


if __name__ == "__main__":
    sys.exit(main())
