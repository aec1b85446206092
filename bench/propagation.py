"""How long a revocation takes to reach another replica: ``python -m bench.propagation [--store redis] [--tokens 20]``.

Two labgate processes (two replicas) share one store: a Redis of their own
(``redis-server`` on a free loopback port) or one SQLite file.  For each of
``--tokens`` fresh tokens: both replicas answer it (200, so each holds a
cached "not revoked" answer), the revocation is written to the store as
``labgate revoke`` on any replica writes it (:meth:`Store.revoke`), and
replica B is asked every ``--poll`` seconds until it answers 401.  The time
from the write's return to B's first 401 is the propagation delay; the report
gives its median, maximum, every value, and how many were refused on B's very
first request after the write.

With Redis the revocation's notice reaches B's local view over pub/sub, and B
trusts that view only while its heartbeat comes back within ``FRESH_BOUND``
(0.25 s): the bound is 0.25 s plus one request, the usual delay one pub/sub
delivery.  With SQLite each replica asks the file again at most
``REVOCATION_CACHE_SECONDS`` (0.5 s) after its cached answer: 0.5 s plus one
request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from bench import upstream as bench_upstream
from bench.labgate_setup import TARGET, expect_body, labgate_command, mint, store_service, write_labgate_config
from bench.processes import LOAD_CPU, PROXY_CPU, fail, free_port, get, process, wait_until_up
from proxy.store.open import StoreSettings, open_store
from proxy.token_facts import token_fingerprint


def revoke_in_store(settings: dict[str, str], token: str) -> None:
    """Write the token's revocation to the shared store, as ``labgate revoke`` on any replica does."""
    kind = settings["type"]
    store = open_store(StoreSettings(kind=kind, url=settings.get("url"),  # type: ignore[arg-type]
                                     path=Path(settings["path"]) if "path" in settings else None))

    async def write() -> None:
        try:
            await store.revoke("token", token_fingerprint(token), time.time(), None)
        finally:
            await store.close()

    asyncio.run(write())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=("redis", "sqlite"), default="redis")
    parser.add_argument("--tokens", type=int, default=20, help="revocations to time (default 20)")
    parser.add_argument("--poll", type=float, default=0.01, help="seconds between questions to replica B (default 0.01)")
    args = parser.parse_args()
    if args.tokens < 1 or not 0 < args.poll <= 1:
        parser.error("--tokens must be positive and --poll within (0, 1]")
    with tempfile.TemporaryDirectory(prefix="labgate-propagation-") as temp, contextlib.ExitStack() as stack:
        directory = Path(temp)
        upstream_port, proxy_port = free_port(), free_port()
        upstream_url = f"http://127.0.0.1:{upstream_port}"
        nginx = shutil.which("nginx")
        log = directory / "upstream.out"
        if nginx:
            conf, _ = bench_upstream.write_nginx_configs(directory, upstream_port, proxy_port)
            upstream = stack.enter_context(process(bench_upstream.nginx_command(nginx, conf), LOAD_CPU, log))
        else:
            upstream = stack.enter_context(process(
                [sys.executable, "-m", "bench.upstream", "--port", str(upstream_port)], LOAD_CPU, log))
        wait_until_up(upstream_url + "/", upstream, log)
        settings = stack.enter_context(store_service(directory, args.store))
        replicas = []
        for name in ("a", "b"):
            port = free_port()
            config = write_labgate_config(directory, port, upstream_url, store=settings, name=f"labgate-{name}.yaml")
            log = directory / f"labgate-{name}.out"
            child = stack.enter_context(process(labgate_command(config), PROXY_CPU, log))
            replicas.append(f"http://127.0.0.1:{port}")
            wait_until_up(replicas[-1] + "/healthz", child, log)
        results = [one_revocation(replicas, settings, args.poll, number) for number in range(args.tokens)]
    delays = [delay for delay, _ in results]
    first = sum(1 for _, asks in results if asks == 1)
    print(f"revocation propagation between two replicas ({args.store} store, {args.tokens} revocations, "
          f"replica B asked every {args.poll * 1000:g} ms)")
    print(f"median {statistics.median(delays) * 1000:.1f} ms, max {max(delays) * 1000:.1f} ms; "
          f"refused on B's first request after the write: {first} of {len(delays)}")
    print("every value (ms): " + " ".join(f"{d * 1000:.1f}" for d in delays))
    return 0


def one_revocation(replicas: list[str], settings: dict[str, str], poll: float, number: int) -> tuple[float, int]:
    """The delay from the revocation's write to B's first 401, and how many requests B got until then."""
    token = mint(f"propagation-{number}")
    for url in replicas:  # both replicas now hold a cached "not revoked" answer
        expect_body("labgate", get(f"{url}/svt{TARGET}", token))
    revoke_in_store(settings, token)
    written = time.monotonic()
    deadline = written + 5.0
    asks = 1
    while (status := get(f"{replicas[1]}/svt{TARGET}", token)[0]) != 401:
        if time.monotonic() > deadline:
            raise fail(f"replica B still answered {status} 5 s after the revocation was written")
        time.sleep(poll)
        asks += 1
    return time.monotonic() - written, asks


if __name__ == "__main__":
    sys.exit(main())
