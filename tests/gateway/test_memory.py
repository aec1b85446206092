"""Bounded memory: a burst of 100,000 distinct tokens, valid and bogus, leaves labgate under its ceiling.

Every per-token structure in labgate (verified-token cache, last uses,
revocation answers, live-token window, observed and introspected tokens) has
a maximum size; this drives a real ``labgate serve`` process through real
sockets and reads its peak resident memory from /proc.  The ceiling is the
one docs/concepts/running.md documents.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import jwt

from tests.conftest import AUDIENCE, ISSUER, SECRET, RecordingUpstream, write_config
from tests.labgate_process import labgate_serving
from tests.redis_server import RedisServer

# docs/concepts/running.md, "Bounded memory": the documented ceiling for this burst.
PEAK_RSS_CEILING_MIB = 250
TOKENS = 100_000
CONNECTIONS = 8
WINDOW = 32


def burst_tokens() -> list[str]:
    """Half valid (each its own subject; a quarter with lifetimes, so uses are recorded), half bogus."""
    now = int(time.time())
    tokens: list[str] = []
    for i in range(TOKENS // 2):
        role = "session" if i % 4 == 0 else "reader"
        claims = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + 600, "sub": f"user-{i}", "role": role, "jti": str(i)}
        tokens.append(jwt.encode(claims, SECRET, algorithm="HS256", headers={"kid": "k1"}))
    for i in range(TOKENS // 2):
        if i % 2:
            tokens.append(os.urandom(24).hex())  # an opaque string: not a JWS
        else:
            forged = jwt.encode({"iss": ISSUER, "aud": AUDIENCE, "exp": now + 600, "sub": f"x-{i}"}, "w" * 48, algorithm="HS256", headers={"kid": "k1"})
            tokens.append(forged)  # well-formed, wrong signature
    return tokens


async def drive(port: int, tokens: list[str]) -> dict[int, int]:
    """Send one request per token, pipelined in windows over keep-alive connections; count answers by status."""
    counts: dict[int, int] = {}
    share = -(-len(tokens) // CONNECTIONS)

    async def connection(mine: list[str]) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for start in range(0, len(mine), WINDOW):
                window = mine[start : start + WINDOW]
                # A path no type allows: verified, state checked, then refused without forwarding.
                writer.write(b"".join(
                    b"GET /demo/api/forbidden HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n\r\n" % t.encode()
                    for t in window
                ))
                for _ in window:
                    head = await reader.readuntil(b"\r\n\r\n")
                    status = int(head[9:12])
                    length = int(head.lower().split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
                    await reader.readexactly(length)
                    counts[status] = counts.get(status, 0) + 1
        finally:
            writer.close()

    await asyncio.gather(*(connection(tokens[i * share : (i + 1) * share]) for i in range(CONNECTIONS)))
    return counts


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


async def test_a_burst_of_100k_distinct_tokens_stays_under_the_memory_ceiling(
    tmp_path: Path, upstream: RecordingUpstream, redis_server: RedisServer
) -> None:
    # Redis as several replicas would run it; the store's own size is Redis's business, not labgate's.
    store = {"type": "redis", "url": redis_server.url, "prefix": f"burst-{os.getpid()}:"}
    config = write_config(tmp_path, upstream.url, decision_log="off", store=store)
    tokens = burst_tokens()
    async with labgate_serving(config) as (url, process):
        port = int(url.rsplit(":", 1)[1])
        started = time.monotonic()
        counts = await drive(port, tokens)
        took, cpu = time.monotonic() - started, cpu_seconds(process.pid)
        peak = peak_rss_mib(process.pid)
    assert counts == {403: TOKENS // 2, 401: TOKENS // 2}
    assert upstream.received == []
    print(f"peak RSS after {TOKENS} distinct tokens: {peak:.1f} MiB ({took:.1f} s, labgate CPU {cpu:.1f} s)")
    assert peak < PEAK_RSS_CEILING_MIB
