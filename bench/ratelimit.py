"""What a rate limit costs per request, in the gateway's own step, without the network.

``python -m bench.ratelimit [--stores memory,sqlite,redis] [--rounds 5] [--requests 20000] [--reserve N]``

For each store, a real gateway is built from ``bench.run``'s config and pack
(the store wrapped as when serving, so store timings are fed as in production)
in three versions: the ``emergency`` type without ``rate_limit``; with a limit
per token the load never reaches (``{requests: 1000000000, per: 1h}``); and
with that limit plus an upstream-wide one of the same size.  The timed step is
the one the gateway takes after an allowed decision,
``Protection.spend(routed, decision)``: the budgets spent, the ``RateLimit``
and ``RateLimit-Policy`` fields made.  Rounds alternate the three versions;
each prints microseconds per request of wall time and of this process's CPU
time (for Redis the two differ by the round trip: the server's work and the
loopback wait), every round and the median.  A limit's cost is its version's
figure minus the version without a limit, taken within each round (for Redis
also minus the store's ping: what the limit costs beyond one round trip).

The Redis store uses a ``redis-server`` of its own on a free loopback port (no
persistence, not pinned), stopped at the end; its rounds add the store's
``ping`` (one round trip and nothing else: the floor under any shared limit)
and run a tenth of the requests.  The end-to-end figure comes
from ``python -m bench.run --rate-limit``; this one is steady enough to see a
few microseconds, which a shared machine's load hides there.

``--reserve N`` adds a fourth version: the per-token limit with ``reserve: N``
(units taken from Redis N at a time and spent in process; the memory and SQLite
stores ignore it, so there it measures the same as the plain limit).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from aiohttp.test_utils import make_mocked_request

from bench.labgate_setup import store_service, write_labgate_config
from bench.processes import free_port
from proxy import event_loop
from proxy.config import load_config
from proxy.gateway.app import Gateway
from proxy.gateway.exchange import Exchange, Routed, TokenUse
from proxy.policy.decide import Decision
from proxy.policy.model import Lifetimes
from proxy.reasons import Reason
from proxy.token_facts import TokenFacts, token_fingerprint

NEVER_REACHED = {"requests": 1_000_000_000, "per": "1h"}
VERSIONS = ("no rate_limit", "type limit", "type + upstream")
RESERVED = "type limit, reserve"  # --reserve N: the type's limit with reserve: N
PING = "store ping"  # Redis only: one round trip through the store, the floor of any shared limit
TARGET = "/svt/api/hosts?offset=0&limit=50"


def config_file(directory: Path, store: dict[str, Any], version: str, reserve: int | None = None) -> Path:
    """``bench.run``'s config and pack, with the limits of ``version``."""
    folder = directory / version.replace(" ", "-").replace("+", "and").replace(",", "")
    folder.mkdir()
    path = write_labgate_config(folder, free_port(), "http://127.0.0.1:9", store, rate_limit=version != "no rate_limit")
    if version.startswith(RESERVED):
        pack = yaml.safe_load((folder / "bench.yaml").read_text())
        pack["token_types"]["emergency"]["rate_limit"] = {**NEVER_REACHED, "reserve": reserve}
        (folder / "bench.yaml").write_text(yaml.safe_dump(pack, sort_keys=False))
    if version == "type + upstream":
        config = yaml.safe_load(path.read_text())
        config["upstreams"][0]["rate_limit"] = NEVER_REACHED
        path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


class Version:
    """One gateway and one allowed request of the ``emergency`` type, routed as the gateway routes it."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        request = make_mocked_request("GET", TARGET, headers={"Host": "127.0.0.1"})
        self.exchange = Exchange(request, "bench", time.perf_counter())
        routed = gateway._route(self.exchange, "GET", TARGET, None)  # the gateway's own routing
        assert isinstance(routed, Routed), routed
        self.routed = routed
        key = token_fingerprint("bench-token")
        facts = TokenFacts(token_type="emergency", token_hash=key, subject="svtcli")
        self.exchange.token = facts
        self.exchange.use = TokenUse(key, facts, Lifetimes())
        self.decision = Decision(True, Reason.ALLOWED, "GET /api/hosts", token_type="emergency")

    async def measure(self, requests: int, concurrency: int = 1) -> tuple[float, float]:
        """Microseconds per request: wall time, and this process's CPU time; ``concurrency`` requests at a time."""
        spend, routed, decision = self.gateway.protection.spend, self.routed, self.decision

        async def one_after_another(count: int) -> None:
            for _ in range(count):
                if await spend(routed, decision) is not None:
                    raise SystemExit("a request was limited: the bench's limits must never be reached")

        each = max(1, requests // concurrency)
        wall, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(one_after_another(each) for _ in range(concurrency)))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return wall / (each * concurrency) * 1e6, cpu / (each * concurrency) * 1e6

    async def measure_ping(self, requests: int) -> tuple[float, float]:
        """The same for the store's ping: one round trip and nothing else, for comparison."""
        ping = self.gateway.store.ping
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(requests):
            await ping()
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        return wall / requests * 1e6, cpu / requests * 1e6


async def bench_store(
    kind: str, rounds: int, requests: int, concurrency: int, reserve: int | None = None
) -> dict[str, list[tuple[float, float]]]:
    """Every round's (wall, CPU) µs per request, per version."""
    names = VERSIONS if reserve is None else (*VERSIONS, f"{RESERVED} {reserve}")
    with tempfile.TemporaryDirectory(prefix="labgate-bench-ratelimit-") as folder, store_service(Path(folder), kind) as store:
        gateways = [Gateway(load_config(config_file(Path(folder), store, version, reserve))) for version in names]
        try:
            for gateway in gateways:
                await gateway.start()
            versions = dict(zip(names, (Version(g) for g in gateways)))
            if versions["type limit"].exchange.rate_headers is None:
                await versions["type limit"].measure(1)  # the first request shows the limit is spent
            assert versions["type limit"].exchange.rate_headers, "the limit was not spent"
            for version in versions.values():
                await version.measure(requests // 10)  # warm-up: plans, connections, scripts
            found: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
            if kind == "redis":
                found[PING] = []
            for _ in range(rounds):
                for name, version in versions.items():
                    found[name].append(await version.measure(requests, concurrency))
                if kind == "redis":
                    found[PING].append(await versions["no rate_limit"].measure_ping(requests))
            return found
        finally:
            for gateway in gateways:
                await gateway.close()


def report(kind: str, found: dict[str, list[tuple[float, float]]]) -> None:
    base = found["no rate_limit"]
    print(f"\n{kind} store: µs per request, median round (every round)")
    for name, rounds in found.items():
        for index, what in ((0, "wall"), (1, "CPU")):
            values = [r[index] for r in rounds]
            line = f"  {name:<22} {what:<4} {statistics.median(values):8.2f}   ({' '.join(f'{v:.2f}' for v in values)})"
            if name not in ("no rate_limit", PING):
                line += _differences("added", rounds, base, index)
                if PING in found:
                    line += _differences("over a ping", rounds, found[PING], index)
            print(line)


def _differences(label: str, rounds: list[tuple[float, float]], base: list[tuple[float, float]], index: int) -> str:
    """``label``: the median of the round-by-round differences, then every one."""
    found = [r[index] - b[index] for r, b in zip(rounds, base)]
    return f"   {label} {statistics.median(found):.2f} ({' '.join(f'{v:.2f}' for v in found)})"


async def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ratelimit", description=__doc__.splitlines()[0])
    parser.add_argument("--stores", default="memory,sqlite,redis", help="memory, sqlite, redis (comma-separated; default all three)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=20_000, help="requests per version and round")
    parser.add_argument("--concurrency", type=int, default=1, help="requests in flight at once (default 1: one after another)")
    parser.add_argument("--reserve", type=int, default=None, help="also the type's limit with reserve: N (from 2)")
    args = parser.parse_args()
    if args.reserve is not None and args.reserve < 2:
        parser.error("--reserve must be at least 2")
    for kind in args.stores.split(","):
        requests = args.requests if kind != "redis" else max(1, args.requests // 10)
        report(kind, await bench_store(kind, args.rounds, requests, max(1, args.concurrency), args.reserve))


if __name__ == "__main__":
    logging.getLogger("labgate").setLevel(logging.ERROR)  # the bench pack's client_ips start-up warning
    event_loop.run(main())  # the loop labgate serves on
