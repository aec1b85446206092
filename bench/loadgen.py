"""A Python load generator fast enough not to be the bottleneck, for machines without wrk.

Raw asyncio (protocols and transports, the layer under asyncio streams, with
no HTTP client library in the loop): N keep-alive connections, each sending
one prebuilt request, waiting for the whole answer, and sending the next.
Answers are framed by ``Content-Length`` or chunked encoding; anything else
(an answer delimited by closing the connection) stops the run with an error.
A ``Connection: close`` answer counts as answered, and the connection is
reopened.  Latency is taken per request with ``time.perf_counter_ns``.
Requests sent during the warm-up are not counted in the results.

``python -m bench.loadgen --url http://127.0.0.1:P/path --connections 32
--duration 10 --warmup 1 [--header 'Name: value']`` prints one JSON object:
requests, requests_per_second, p50_ms, p99_ms, non_2xx (answers outside
200-299, counted in requests too), errors (connections lost or refused
mid-request), and requests_total (warm-up included).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import time
from urllib.parse import urlsplit


class Tally:
    def __init__(self, start_ns: int, stop_ns: int) -> None:
        self.start_ns = start_ns
        self.stop_ns = stop_ns
        self.latencies_ns: list[int] = []
        self.non_2xx = 0
        self.errors = 0
        self.total = 0


class ProtocolError(RuntimeError):
    """An answer this load generator cannot frame: stop the run, loudly."""


def parse_response(buffer: bytearray) -> tuple[int, int, bool] | None:
    """``(bytes used, status, server closes)`` for one whole answer at the start of ``buffer``, or None."""
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    lines = bytes(buffer[:head_end]).split(b"\r\n")
    try:
        status = int(lines[0].split(b" ", 2)[1])
    except (IndexError, ValueError):
        raise ProtocolError(f"not an HTTP status line: {lines[0][:80]!r}") from None
    length: int | None = None
    chunked = False
    close = lines[0].startswith(b"HTTP/1.0")
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            tokens = {t.strip() for t in value.lower().split(b",")}
            close = b"close" in tokens or (close and b"keep-alive" not in tokens)
    position = head_end + 4
    if chunked:
        while True:
            line_end = buffer.find(b"\r\n", position)
            if line_end < 0:
                return None
            try:
                size = int(bytes(buffer[position:line_end]).split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise ProtocolError("bad chunk size line") from None
            position = line_end + 2
            if size == 0:
                while True:  # trailer fields, then an empty line
                    line_end = buffer.find(b"\r\n", position)
                    if line_end < 0:
                        return None
                    empty = line_end == position
                    position = line_end + 2
                    if empty:
                        return position, status, close
            if len(buffer) < position + size + 2:
                return None
            position += size + 2
    if length is None:
        if status in (204, 304) or 100 <= status < 200:
            return position, status, close
        raise ProtocolError(f"answer {status} has neither Content-Length nor chunked encoding")
    if len(buffer) < position + length:
        return None
    return position + length, status, close


class Connection(asyncio.Protocol):
    def __init__(self, request: bytes, tally: Tally, finished: asyncio.Future[str]) -> None:
        self.request = request
        self.tally = tally
        self.finished = finished
        self.buffer = bytearray()
        self.sent = 0
        self.waiting = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.send()

    def send(self) -> None:
        now = time.perf_counter_ns()
        if now >= self.tally.stop_ns:
            self.finish("stop")
            return
        self.sent = now
        self.waiting = True
        self.transport.write(self.request)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        try:
            parsed = parse_response(self.buffer)
        except ProtocolError as exc:
            self.finish(exc)
            return
        if parsed is None:
            return
        done = time.perf_counter_ns()
        used, status, close = parsed
        del self.buffer[:used]
        self.waiting = False
        tally = self.tally
        tally.total += 1
        if self.sent >= tally.start_ns:  # warm-up requests are not counted
            tally.latencies_ns.append(done - self.sent)
            if not 200 <= status < 300:
                tally.non_2xx += 1
        if close:
            self.finish("closed")
        else:
            self.send()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.finished.done():
            if self.waiting and self.sent >= self.tally.start_ns:
                self.tally.errors += 1
            self.finished.set_result("lost")

    def finish(self, outcome: str | Exception) -> None:
        if not self.finished.done():
            if isinstance(outcome, Exception):
                self.finished.set_exception(outcome)
            else:
                self.finished.set_result(outcome)
        if self.transport is not None:
            self.transport.close()


async def drive(host: str, port: int, request: bytes, tally: Tally) -> None:
    """One connection slot: keep a connection busy until the stop time, reopening it when it closes."""
    loop = asyncio.get_running_loop()
    while time.perf_counter_ns() < tally.stop_ns:
        finished: asyncio.Future[str] = loop.create_future()
        try:
            await loop.create_connection(lambda finished=finished: Connection(request, tally, finished), host, port)
        except OSError:
            if time.perf_counter_ns() >= tally.start_ns:
                tally.errors += 1
            await asyncio.sleep(0.01)
            continue
        outcome = await finished  # raises ProtocolError: fail loudly
        if outcome == "stop":
            return


def percentile(sorted_values: list[int], fraction: float) -> float:
    """Nearest-rank percentile, in milliseconds."""
    if not sorted_values:
        return float("nan")
    index = min(len(sorted_values) - 1, max(0, int(fraction * len(sorted_values) + 0.5) - 1))
    return sorted_values[index] / 1e6


def build_request(url: str, headers: list[str]) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    if parts.scheme != "http":
        raise SystemExit("only http:// URLs are supported")
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    lines = [f"GET {target} HTTP/1.1", f"Host: {parts.netloc}", *headers]
    return host, port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def run(url: str, connections: int, duration: float, warmup: float, headers: list[str]) -> dict[str, float]:
    host, port, request = build_request(url, headers)
    now = time.perf_counter_ns()
    tally = Tally(now + int(warmup * 1e9), now + int((warmup + duration) * 1e9))
    await asyncio.gather(*(drive(host, port, request, tally) for _ in range(connections)))
    latencies = sorted(tally.latencies_ns)
    return {
        "requests": len(latencies),
        "requests_per_second": len(latencies) / duration,
        "p50_ms": percentile(latencies, 0.50),
        "p99_ms": percentile(latencies, 0.99),
        "non_2xx": tally.non_2xx,
        "errors": tally.errors,
        "requests_total": tally.total,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="http://host:port/path?query")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=float, default=10.0, help="measured seconds (after the warm-up)")
    parser.add_argument("--warmup", type=float, default=1.0, help="seconds of load before measuring")
    parser.add_argument("--header", action="append", default=[], help="'Name: value', repeatable")
    args = parser.parse_args()
    gc.disable()  # no collector pauses in the measuring process
    print(json.dumps(asyncio.run(run(args.url, args.connections, args.duration, args.warmup, args.header))))


if __name__ == "__main__":
    main()
