"""Shared test parts: a recording upstream, configs written to disk, tokens, raw HTTP.

Everything runs on 127.0.0.1 through real sockets.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from aiohttp import web

from proxy.config import Config, load_config
from proxy.gateway.app import Gateway
from proxy.gateway.server import make_runner, server_ssl
from tests.redis_server import redis_server  # noqa: F401 - a fixture for every test package

SECRET = "s" * 48
ISSUER = "https://labgate.test/issuer"
AUDIENCE = "appliance"

TEST_PACK = """
pack: demo
token_types:
  reader:
    routes:
      - GET /api/hosts
      - GET /api/hosts/{id}
      - POST /api/backups/{bkpId}/restore
      - PUT /api/upload
      - GET /api/download
      - GET /api/slow
      - HEAD /api/hosts
    query:
      allow: [offset, limit]
  admin:
    path_prefixes: [/api]
  office:
    routes: [GET /api/hosts]
    client_ips: [10.9.0.0/16]
  session:
    routes: [GET /api/hosts]
    lifetimes: {ttl: 1h, idle: 10m, absolute: 24h}
"""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def mint(claims: dict[str, Any] | None = None, *, secret: str = SECRET, lifetime: int = 300, **headers: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "iat": now, "exp": now + lifetime, "sub": "alice", "role": "reader"}
    body.update(claims or {})
    return jwt.encode(body, secret, algorithm="HS256", headers={"kid": "k1", **headers})


@asynccontextmanager
async def app_on_loopback(app: web.Application) -> AsyncIterator[str]:
    """Serve ``app`` on a free 127.0.0.1 port until the block ends; yields its base URL."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    try:
        await web.TCPSite(runner, "127.0.0.1", port).start()
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@dataclass
class Received:
    method: str
    raw_path: str
    headers: dict[str, list[str]]
    body_size: int


@dataclass
class RecordingUpstream:
    """An appliance stand-in that records exactly what reached it."""

    received: list[Received] = field(default_factory=list)
    url: str = ""
    download_size: int = 1024
    slow_seconds: float = 0.0

    async def handle(self, request: web.Request) -> web.StreamResponse:
        size = 0
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
        headers: dict[str, list[str]] = {}
        for name, value in request.headers.items():
            headers.setdefault(name.lower(), []).append(value)
        self.received.append(Received(request.method, request.raw_path, headers, size))
        if request.path == "/api/slow":
            await asyncio.sleep(self.slow_seconds)
        if request.path == "/api/download":
            response = web.StreamResponse(headers={"Content-Length": str(self.download_size)})
            await response.prepare(request)
            block = b"x" * (1 << 20)
            left = self.download_size
            while left > 0:
                await response.write(block[: min(left, len(block))])
                left -= min(left, len(block))
            await response.write_eof()
            return response
        return web.json_response(
            {"path": request.raw_path, "received_bytes": size},
            headers={"Connection": "close, X-Upstream-Secret", "X-Upstream-Secret": "1", "Keep-Alive": "timeout=5"},
        )


@pytest.fixture
async def upstream() -> AsyncIterator[RecordingUpstream]:
    recorder = RecordingUpstream()
    app = web.Application(client_max_size=1 << 40)
    app.router.add_route("*", "/{tail:.*}", recorder.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    recorder.url = f"http://127.0.0.1:{port}"
    yield recorder
    await runner.cleanup()


def write_config(
    tmp_path: Path, upstream_url: str, *, upstream: dict[str, Any] | None = None, pack_text: str = TEST_PACK, **overrides: Any
) -> Path:
    """A config (and pack, and key) in tmp_path.

    ``upstream`` entries replace keys of the one upstream; ``overrides`` replace top-level keys;
    ``pack_text`` is the ``demo`` pack (TEST_PACK unless a test needs another).
    """
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "demo.yaml").write_text(pack_text)
    (tmp_path / "hs256.secret").write_text(SECRET)
    source = {
        "type": "jwt",
        "algorithms": ["HS256"],
        "keys": [{"kid": "k1", "algorithm": "HS256", "secret_file": "hs256.secret"}],
        "issuer": ISSUER,
        "audience": AUDIENCE,
        "types": [
            {"token_type": "admin", "match": {"role": "admin"}},
            {"token_type": "office", "match": {"role": "office"}},
            {"token_type": "session", "match": {"role": "session"}},
            {"token_type": "reader", "match": {"role": "reader"}},
        ],
    }
    document: dict[str, Any] = {
        "listen": {"address": "127.0.0.1", "port": free_port()},
        "policies": ["policies"],
        "limits": {"max_body_bytes": 4 * 1024**3, "header_timeout": 2},
        "upstreams": [
            {
                "name": "demo",
                "url": upstream_url,
                "path_prefix": "/demo",
                "pack": "demo",
                "timeouts": {"connect": 2, "read": 2},
                "token_source": source,
            }
        ],
    }
    document["upstreams"][0].update(upstream or {})
    document.update(overrides)
    path = tmp_path / "labgate.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@dataclass
class RunningGateway:
    config: Config
    url: str
    port: int


GatewayStarter = Callable[..., Awaitable[RunningGateway]]


@asynccontextmanager
async def gateway_starter(tmp_path: Path, transport: str) -> AsyncIterator[GatewayStarter]:
    """Start labgate (in this process, real sockets) on written configs; stop them all at the end."""
    runners: list[web.BaseRunner] = []

    async def start(
        upstream_url: str, *, upstream: dict[str, Any] | None = None, pack_text: str = TEST_PACK, **overrides: Any
    ) -> RunningGateway:
        upstream = {"transport": transport, **(upstream or {})}
        config = load_config(write_config(tmp_path, upstream_url, upstream=upstream, pack_text=pack_text, **overrides))
        runner = make_runner(Gateway(config), config)
        await runner.setup()
        site = web.TCPSite(runner, config.listen.address, config.listen.port, ssl_context=server_ssl(config))
        await site.start()
        runners.append(runner)
        scheme = "https" if config.listen.tls else "http"
        return RunningGateway(config, f"{scheme}://127.0.0.1:{config.listen.port}", config.listen.port)

    try:
        yield start
    finally:
        for runner in runners:
            await runner.cleanup()


@pytest.fixture(params=["http1", "aiohttp"])
async def start_gateway(tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[GatewayStarter]:
    """A gateway starter, once per upstream transport: every end-to-end test runs on both."""
    async with gateway_starter(tmp_path, request.param) as start:
        yield start


@pytest.fixture
async def start_http1_gateway(tmp_path: Path) -> AsyncIterator[GatewayStarter]:
    """A gateway starter for tests of the http1 transport itself."""
    async with gateway_starter(tmp_path, "http1") as start:
        yield start


@dataclass
class RawResponse:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def raw_request(port: int, head: str, body: bytes = b"", *, timeout: float = 5.0) -> RawResponse:
    """Send bytes exactly as given (no client-side URL normalization) and read one response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode("latin-1") + body)
        await writer.drain()
        async with asyncio.timeout(timeout):
            status_line = await reader.readline()
            headers: dict[str, str] = {}
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            data = await reader.readexactly(length) if length else b""
        return RawResponse(int(status_line.split()[1]), headers, data)
    finally:
        writer.close()
