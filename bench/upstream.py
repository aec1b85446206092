"""The fast local upstream: a fixed ~300-byte JSON answer to every request.

``python -m bench.upstream --port P`` serves it with aiohttp's low-level
server (no router, no access log), the fastest aiohttp can answer.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Awaitable, Callable

from aiohttp import web

BODY = (
    b'{"hosts":[{"id":"4c4c4544-0051-4610-8052-b7c04f4e5931","name":"esx-01.lab.example",'
    b'"state":"ALIVE","type":"OmniStack","model":"HPE SimpliVity 380 Series 4000",'
    b'"omnistack_cluster_id":"2d1d8a55-3c06-4b71-a7e2-3a2a9a0f6d2e","hypervisor_management_system":"vc-01.lab.example",'
    b'"version":"Release 4.2.0.2"}],"offset":0,"limit":50,"count":1}'
)


async def answer(request: web.BaseRequest) -> web.Response:
    await request.read()
    return web.Response(body=BODY, content_type="application/json")


async def serve_forever(handler: Callable[[web.BaseRequest], Awaitable[web.StreamResponse]], port: int) -> None:
    """Serve ``handler`` on 127.0.0.1 with aiohttp's low-level server until killed."""
    server = web.Server(handler, access_log=None)
    loop = asyncio.get_running_loop()
    await loop.create_server(server, "127.0.0.1", port, backlog=1024)
    await asyncio.Event().wait()


async def serve(port: int) -> None:
    await serve_forever(answer, port)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    asyncio.run(serve(parser.parse_args().port))


if __name__ == "__main__":
    main()
