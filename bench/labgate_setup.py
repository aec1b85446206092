"""What labgate runs in the benchmark: its pack, config and store, the token, and the correctness gate."""

from __future__ import annotations

import contextlib
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import yaml

from bench import upstream as bench_upstream
from bench.processes import LOAD_CPU, ROOT, fail, free_port, get, process

SECRET = "bench-hs256-secret-" + "x" * 45
ISSUER = "https://labgate.bench/issuer"
AUDIENCE = "simplivity"
TARGET = "/api/hosts?offset=0&limit=50"
DENIED_TARGET = "/api/hosts?offset=0&limit=50&sort=name"
GENERATED_ROUTES = 1000
LABGATE = "labgate (all checks)"


def labgate_name(store: str) -> str:
    return f"labgate, {store} store"


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


STORES = ("memory", "sqlite", "redis")


@contextlib.contextmanager
def store_service(directory: Path, kind: str) -> Iterator[dict[str, Any]]:
    """The config's ``store`` section; for ``redis`` a real redis-server of its own, stopped at the end."""
    if kind == "memory":
        yield {"type": "memory"}
        return
    if kind == "sqlite":
        yield {"type": "sqlite", "path": str(directory / "labgate.db")}
        return
    server = shutil.which("redis-server")
    if server is None:
        raise SystemExit("the redis store needs redis-server on PATH")
    port = free_port()
    log = directory / f"redis-{port}.out"
    command = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
               "--dir", str(directory)]
    with process(command, LOAD_CPU, log) as child:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if child.poll() is not None or time.monotonic() > deadline:
                    raise fail("redis-server did not start", log) from None
                time.sleep(0.05)
        yield {"type": "redis", "url": f"redis://127.0.0.1:{port}/0"}


def write_labgate_config(directory: Path, port: int, upstream_url: str, store: dict[str, Any] | None = None,
                         name: str = "labgate.yaml", rate_limit: bool = False) -> Path:
    (directory / "bench.yaml").write_text(yaml.safe_dump(bench_pack(rate_limit), sort_keys=False))
    (directory / "hs256.secret").write_text(SECRET)
    config: dict[str, Any] = {
        "listen": {"address": "127.0.0.1", "port": port},
        "store": store or {"type": "sqlite", "path": str(directory / "labgate.db")},
        "policies": [str(ROOT / "policies"), "bench.yaml"],
        # Denials only: the realistic production setting (allowed requests are
        # counted in metrics, not logged one line each).
        "decision_log": "denials",
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
    path = directory / name
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def labgate_command(config: Path) -> list[str]:
    script = Path(sys.executable).parent / "labgate"
    if script.exists():
        command = [str(script)]
    else:
        command = [sys.executable, "-m", "proxy.cli"]
    return command + serve_args(config)


def serve_args(config: Path) -> list[str]:
    """``labgate``'s arguments in the benchmark: serve this config, log only warnings."""
    return ["serve", "--config", str(config), "--log-level", "warning"]


def mint(subject: str = "svtcli") -> str:
    """An HS256 token of the restricted type (emergency), valid for an hour."""
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": subject, "grant_type": "emergency", "iat": now, "exp": now + 3600}
    return jwt.encode(claims, SECRET, algorithm="HS256", headers={"kid": "bench"})


def check_labgate(url: str, token: str, log: Path, directory: Path, config: Path | None = None) -> None:
    """The correctness gate: never measure error answers, and prove every check runs.

    The request under load gets 200 with the upstream's exact body; with
    ``&sort=name`` (a query parameter the type does not allow) 403; and a token
    revoked in the store (``labgate revoke``, when the store is one the command
    can reach) 401, so the store's revocation check runs on the measured path.
    """
    expect_body(LABGATE, get(f"{url}/svt{TARGET}", token), log)
    denied, body = get(f"{url}/svt{DENIED_TARGET}", token)
    if denied != 403:
        raise fail(f"labgate answered {denied} to {DENIED_TARGET} (want 403): its checks are not on\n{body[:300]!r}", log)
    config = config or directory / "labgate.yaml"
    if yaml.safe_load(config.read_text()).get("store", {}).get("type") == "memory":
        return  # a memory store lives in labgate's process: nothing outside can revoke in it
    revoked = mint("revoked-in-bench")
    expect_body(LABGATE, get(f"{url}/svt{TARGET}", revoked), log)  # allowed, and now cached as not revoked
    token_file = directory / "revoked.token"
    token_file.write_text(revoked)
    done = subprocess.run([*labgate_command(config)[:-5], "revoke", "--config", str(config), "--token-file",
                           str(token_file)], capture_output=True, text=True, cwd=ROOT, timeout=30)
    if done.returncode != 0:
        raise fail(f"labgate revoke failed: {done.stderr.strip()}", log)
    deadline = time.monotonic() + 5
    while (status := get(f"{url}/svt{TARGET}", revoked)[0]) != 401:
        if time.monotonic() > deadline:
            raise fail(f"labgate answered {status} to a revoked token (want 401): its store checks are not on", log)
        time.sleep(0.05)


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



def expect_body(name: str, answer: tuple[int, bytes], log: Path | None = None) -> None:
    status, body = answer
    if status != 200 or body != bench_upstream.BODY:
        raise fail(f"{name} answered {status} with {body[:300]!r}, not 200 with the upstream's body: not benchmarking that", log)

