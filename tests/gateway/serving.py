"""labgate as ``labgate serve`` runs it (a ReloadingGateway), in this process on real sockets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from proxy.config import load_config
from proxy.gateway.reload import ReloadingGateway
from proxy.gateway.server import make_runner
from tests.conftest import free_port


@asynccontextmanager
async def serving(config_path: Path) -> AsyncIterator[tuple[ReloadingGateway, str]]:
    """Serve ``config_path`` until the block ends, then drain and close as a shutdown does."""
    config = load_config(config_path)
    gateway = ReloadingGateway(config)
    runner = make_runner(gateway, config)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.listen.address, config.listen.port).start()
        yield gateway, f"http://127.0.0.1:{config.listen.port}"
    finally:
        gateway.stop_reloading()
        await runner.cleanup()


class GatedUpstream:
    """An appliance whose ``/api/slow`` answers only when the test releases it; everything else at once."""

    def __init__(self) -> None:
        self.arrived = asyncio.Event()
        self.release = asyncio.Event()
        self.paths: list[str] = []
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.paths.append(request.raw_path)
        if request.path == "/api/slow":
            self.arrived.set()
            await self.release.wait()
        return web.json_response({"path": request.raw_path})

    async def __aenter__(self) -> GatedUpstream:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.release.set()
        assert self._runner is not None
        await self._runner.cleanup()


async def get(url: str, token: str | None = None) -> tuple[int, Any]:
    """One GET on a fresh connection: status and JSON body."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as session:
        async with session.get(url, headers=headers) as response:
            return response.status, await response.json(content_type=None)


async def metrics_text(url: str) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/metrics") as response:
            return await response.text()
