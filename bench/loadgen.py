"""A Python load generator fast enough not to be the bottleneck, for machines without wrk.

Raw asyncio streams, one prebuilt keep-alive request per connection, answers
read by ``Content-Length``: no HTTP client library in the measured loop.
``python -m bench.loadgen --url http://127.0.0.1:P/path --connections 32
--duration 10 --warmup 1 [--header 'Name: value']`` prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from dataclasses import dataclass, field
from urllib.parse import urlsplit


@dataclass
class Tally:
    latencies_ns: list[int] = field(default_factory=list)
    non_2xx: int = 0
    errors: int = 0


async def read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = None
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        lowered = name.strip().lower()
        if lowered == b"content-length":
            length = int(value)
        elif lowered == b"transfer-encoding" and b"chunked" in value.lower():
            raise RuntimeError("chunked answers are not supported by this load generator")
    if length is None:
        raise RuntimeError("answer without Content-Length")
    if length:
        await reader.readexactly(length)
    return status


async def connection(host: str, port: int, request: bytes, start_at: float, stop_at: float, tally: Tally) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            sent = time.perf_counter_ns()
            if sent / 1e9 >= stop_at:
                return
            writer.write(request)
            try:
                status = await read_response(reader)
            except (asyncio.IncompleteReadError, ConnectionError):
                tally.errors += 1
                writer.close()
                try:
                    reader, writer = await asyncio.open_connection(host, port)
                except OSError:
                    return  # the target is gone: the errors say so
                continue
            done = time.perf_counter_ns()
            if sent / 1e9 >= start_at:  # warm-up requests are not counted
                tally.latencies_ns.append(done - sent)
                if not 200 <= status < 300:
                    tally.non_2xx += 1
    finally:
        writer.close()


def percentile(sorted_values: list[int], fraction: float) -> float:
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, int(round(fraction * (len(sorted_values) - 1))))
    return sorted_values[index] / 1e6


async def run(url: str, connections: int, duration: float, warmup: float, headers: list[str]) -> dict[str, float]:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {host}:{port}", *headers]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    tally = Tally()
    now = time.perf_counter()
    start_at, stop_at = now + warmup, now + warmup + duration
    await asyncio.gather(*(connection(host, port, request, start_at, stop_at, tally) for _ in range(connections)))
    latencies = sorted(tally.latencies_ns)
    return {
        "requests": len(latencies),
        "requests_per_second": len(latencies) / duration,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "non_2xx": tally.non_2xx,
        "errors": tally.errors,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", required=True)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--header", action="append", default=[])
    args = parser.parse_args()
    print(json.dumps(asyncio.run(run(args.url, args.connections, args.duration, args.warmup, args.header))))


if __name__ == "__main__":
    main()
