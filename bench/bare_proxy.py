"""The baseline: a bare aiohttp pass-through proxy (server + one ClientSession), no checks.

What PRODUCT.md calls "a bare aiohttp proxy": the least an aiohttp proxy
does.  labgate does all of this plus every check, and must stay within 10%.
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
from aiohttp import web
from yarl import URL


async def serve(port: int, upstream: str) -> None:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100), auto_decompress=False)

    async def forward(request: web.BaseRequest) -> web.Response:
        body = await request.read()
        async with session.request(
            request.method, URL(upstream + request.raw_path, encoded=True), data=body or None, allow_redirects=False
        ) as response:
            payload = await response.read()
            return web.Response(
                status=response.status, body=payload, headers={"Content-Type": response.headers.get("Content-Type", "")}
            )

    server = web.Server(forward, access_log=None)
    loop = asyncio.get_running_loop()
    await loop.create_server(server, "127.0.0.1", port, backlog=1024)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:9000")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.upstream.rstrip("/")))


if __name__ == "__main__":
    main()
