"""The floor of this stack: aiohttp's low-level server and the least a checking proxy can do.

What labgate runs on, with nothing of labgate's: aiohttp's low-level server on
uvloop (labgate's event loop on Linux), a bearer token verified with PyJWT
once and then found in a dict by its sha256, the route and the forbidden
``sort`` parameter checked with one dict lookup and one substring test, and
the request forwarded on a keep-alive connection whose answer httptools
frames.  No request ids, no header allow model, no client IP, no revocation
or lifetimes, no rate limits, no metrics, no timeouts, no error handling: it
is not a proxy to run, only a measure of what any proxy on this stack pays
before it does any of that (``python -m bench.run --floor``).

``python -m bench.floor_proxy --listen-port P --upstream-port U --secret S``
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
from typing import Any

import httptools
import jwt
from aiohttp import web

from proxy import event_loop

DROPPED = frozenset({"connection", "keep-alive", "transfer-encoding", "content-length", "date", "server"})


class Upstream(asyncio.Protocol):
    """One keep-alive connection; one answer at a time, whole."""

    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.answer: asyncio.Future[tuple[int, list[tuple[str, str]], bytes]] | None = None
        self.headers: list[tuple[str, str]] = []
        self.body: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.parser.feed_data(data)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        assert self.answer is not None
        self.answer.set_result((self.parser.get_status_code(), self.headers, b"".join(self.body)))


async def serve(port: int, upstream_port: int, secret: str) -> None:
    loop = asyncio.get_running_loop()
    idle: list[Upstream] = []
    verified: dict[bytes, dict[str, Any]] = {}
    routes = {("GET", "/api/hosts")}

    async def handle(request: web.BaseRequest) -> web.Response:
        token = request.headers.get("Authorization", "")[7:]
        key = hashlib.sha256(token.encode()).digest()
        if key not in verified:
            verified[key] = jwt.decode(token, secret, algorithms=["HS256"], options={"verify_aud": False})
        path, _, query = request.raw_path.removeprefix("/svt").partition("?")
        if (request.method, path) not in routes or "sort=" in query:
            return web.Response(status=403)
        while idle:  # a connection the upstream closed while it sat idle is dropped, as any keep-alive pool must
            connection = idle.pop()
            if connection.transport is not None and not connection.transport.is_closing():
                break
        else:
            connection = (await loop.create_connection(Upstream, "127.0.0.1", upstream_port))[1]
        connection.headers, connection.body = [], []
        connection.answer = loop.create_future()
        assert connection.transport is not None
        connection.transport.write(f"GET {path}?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        status, headers, body = await connection.answer
        idle.append(connection)
        return web.Response(status=status, body=body, headers=[h for h in headers if h[0].lower() not in DROPPED])

    server = web.Server(handle, access_log=None)
    listener = await loop.create_server(server, "127.0.0.1", port, backlog=1024)
    try:
        await asyncio.Event().wait()
    finally:
        listener.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--listen-port", type=int, required=True, help="port to listen on (127.0.0.1)")
    parser.add_argument("--upstream-port", type=int, required=True, help="the upstream's port on 127.0.0.1")
    parser.add_argument("--secret", required=True, help="the HS256 secret the benchmark's token is signed with")
    args = parser.parse_args()
    event_loop.run(serve(args.listen_port, args.upstream_port, args.secret))  # the loop labgate serves on


if __name__ == "__main__":
    main()
