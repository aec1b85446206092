"""The baseline: a bare aiohttp pass-through proxy, no checks at all.

aiohttp's low-level server plus one ``aiohttp.ClientSession`` (a keep-alive
pool of up to 100 connections).  It forwards the method, the raw target (path
and query, byte for byte), the headers minus hop-by-hop ones (a proxy in front
of a bearer-token API must pass ``Authorization`` on) and the body, and answers
with the upstream's status, headers and body: what any pass-through proxy does,
and nothing more.

``python -m bench.bare_proxy --listen-port P --upstream http://127.0.0.1:U``
"""

from __future__ import annotations

import argparse
import asyncio

import aiohttp
from aiohttp import web
from yarl import URL

# RFC 9110 section 7.6.1, plus Host, which the client sets for the upstream.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade", "host"}
)


async def serve(port: int, upstream: str) -> None:
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=100, keepalive_timeout=75),
        auto_decompress=False,
    )
    base = upstream.rstrip("/")

    async def forward(request: web.BaseRequest) -> web.Response:
        body = await request.read()
        async with session.request(
            request.method,
            URL(base + request.raw_path, encoded=True),
            headers=[(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP],
            data=body or None,
            allow_redirects=False,
        ) as response:
            payload = await response.read()
            headers = [(k, v) for k, v in response.headers.items() if k.lower() not in HOP_BY_HOP]
            return web.Response(status=response.status, body=payload, headers=headers)

    server = web.Server(forward, access_log=None)
    loop = asyncio.get_running_loop()
    listener = await loop.create_server(server, "127.0.0.1", port, backlog=1024)
    try:
        await asyncio.Event().wait()
    finally:
        listener.close()
        await session.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen-port", "--port", dest="port", type=int, required=True, help="port to listen on (127.0.0.1)")
    parser.add_argument("--upstream", required=True, help="upstream base URL, e.g. http://127.0.0.1:9000")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.upstream))


if __name__ == "__main__":
    main()
