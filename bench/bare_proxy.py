"""The baseline: a bare aiohttp pass-through proxy (server + one ClientSession), no checks.

What PRODUCT.md calls "a bare aiohttp proxy": the least an aiohttp proxy in
front of a bearer-token API does — forward the method, raw target, headers
(minus hop-by-hop ones) and body, and return status, headers and body.
labgate does all of this plus every check, and must stay within 10%.
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
from aiohttp import web
from yarl import URL

from bench.upstream import serve_forever


# What any pass-through proxy must not forward (RFC 9110 section 7.6.1), and Host,
# which the client sets for the upstream.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host"})


async def serve(port: int, upstream: str) -> None:
    session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=100), auto_decompress=False)

    async def forward(request: web.BaseRequest) -> web.Response:
        """Headers pass both ways, as through any proxy that fronts a bearer-token API."""
        body = await request.read()
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        async with session.request(
            request.method,
            URL(upstream + request.raw_path, encoded=True),
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as response:
            payload = await response.read()
            answer = [(k, v) for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP]
            return web.Response(status=response.status, body=payload, headers=answer)

    await serve_forever(forward, port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="e.g. http://127.0.0.1:9000")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.upstream.rstrip("/")))


if __name__ == "__main__":
    main()
