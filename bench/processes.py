"""Starting, pinning and stopping the benchmark's processes; driving load with wrk or :mod:`bench.loadgen`."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import resource
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROXY_CPU, LOAD_CPU = {0}, {1}


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


# -- load ---------------------------------------------------------------------


def load(url: str, headers: list[str], duration: float, warmup: float, connections: int,
         cpus: set[int] | None = None) -> dict[str, float]:
    """One measured load run; the load generator on ``cpus`` (default: the load CPU)."""
    cpus = LOAD_CPU if cpus is None else cpus
    if shutil.which("wrk"):
        return load_with_wrk(url, headers, duration, warmup, connections, cpus)
    command = [sys.executable, "-m", "bench.loadgen", "--url", url, "--duration", str(duration),
               "--warmup", str(warmup), "--connections", str(connections)]
    command += [a for h in headers for a in ("--header", h)]
    done = subprocess.run(command, preexec_fn=pinned(cpus), capture_output=True, text=True, cwd=ROOT,
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


def load_with_wrk(url: str, headers: list[str], duration: float, warmup: float, connections: int,
                  cpus: set[int]) -> dict[str, float]:
    def wrk(seconds: float) -> str:
        # wrk takes whole seconds only ("0.5s" is a usage error): a fraction is rounded up.
        command = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, math.ceil(seconds))}s", "--latency"]
        command += [a for h in headers for a in ("-H", h)] + [url]
        done = subprocess.run(command, preexec_fn=pinned(cpus), capture_output=True, text=True,
                              timeout=seconds + 60)
        if done.returncode != 0:
            raise SystemExit(f"wrk failed on {url}:\n{done.stdout}{done.stderr}")
        return done.stdout

    warmed = parse_wrk(wrk(warmup))["requests"] if warmup > 0 else 0
    result = parse_wrk(wrk(duration))
    result["requests_total"] += warmed
    return result

