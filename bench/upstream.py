"""The fast local upstream: a fixed ~300-byte JSON answer (a SimpliVity host list) to every request.

With nginx on ``PATH``, :func:`write_nginx_configs` writes two nginx configs:
the upstream itself (``return 200`` of the body on any path) and an nginx
reverse proxy in front of it (keep-alive upstream pool), for the "nginx proxy"
line of the table.  Each runs as its own single process (``master_process
off``), so each can be pinned to its own CPU and its CPU time read from /proc.

Without nginx, ``python -m bench.upstream --port P [--impl httptools|aiohttp]``
serves the same body from Python:

- ``httptools`` (the default when importable; it is one of labgate's own
  dependencies): an asyncio protocol feeding httptools' request parser (the
  llhttp parser) and writing one prebuilt answer per complete request.  About
  twice as fast as aiohttp's server, which matters here: the upstream shares
  its core with the load generator, and that core must not be the bottleneck.
- ``aiohttp``: aiohttp's low-level server (no router, no access log), the
  fastest aiohttp itself answers.
"""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from aiohttp import web

BODY = (
    b'{"hosts":[{"id":"4c4c4544-0051-4610-8052-b7c04f4e5931","name":"esx-01.lab.example",'
    b'"state":"ALIVE","type":"OmniStack","model":"HPE SimpliVity 380 Series 4000",'
    b'"omnistack_cluster_id":"2d1d8a55-3c06-4b71-a7e2-3a2a9a0f6d2e","hypervisor_management_system":"vc-01.lab.example",'
    b'"version":"Release 4.2.0.2"}],"offset":0,"limit":50,"count":1}'
)
CONTENT_TYPE = "application/json"

# One nginx process per config: "master_process off" keeps the worker in the
# process we start (pinning and /proc CPU time apply to it), "daemon off" keeps
# it in the foreground; every path nginx writes lies in the temp directory.
_NGINX_COMMON = """\
worker_processes 1;
master_process off;
daemon off;
pid {dir}/{name}.pid;
error_log {dir}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/{name}-body;
    proxy_temp_path {dir}/{name}-proxy;
    fastcgi_temp_path {dir}/{name}-fastcgi;
    uwsgi_temp_path {dir}/{name}-uwsgi;
    scgi_temp_path {dir}/{name}-scgi;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
{server}
}}
"""

_NGINX_UPSTREAM_SERVER = """\
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location / {{
            default_type {content_type};
            return 200 '{body}';
        }}
    }}"""

_NGINX_PROXY_SERVER = """\
    upstream appliance {{
        server 127.0.0.1:{upstream_port};
        keepalive 100;
    }}
    server {{
        listen 127.0.0.1:{port} backlog=1024;
        location / {{
            proxy_pass http://appliance;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}"""


def write_nginx_configs(directory: Path, upstream_port: int, proxy_port: int) -> tuple[Path, Path]:
    """Write the nginx upstream config and the nginx proxy config; return both paths."""
    body = BODY.decode()
    if "'" in body or "\\" in body:
        raise ValueError("the body must not contain quotes or backslashes for nginx's return directive")
    upstream_server = _NGINX_UPSTREAM_SERVER.format(port=upstream_port, content_type=CONTENT_TYPE, body=body)
    proxy_server = _NGINX_PROXY_SERVER.format(port=proxy_port, upstream_port=upstream_port)
    (directory / "logs").mkdir(exist_ok=True)  # where nginx logs before it has read its config
    upstream_conf = directory / "nginx-upstream.conf"
    proxy_conf = directory / "nginx-proxy.conf"
    upstream_conf.write_text(_NGINX_COMMON.format(dir=directory, name="upstream", server=upstream_server))
    proxy_conf.write_text(_NGINX_COMMON.format(dir=directory, name="proxy", server=proxy_server))
    return upstream_conf, proxy_conf


def nginx_command(nginx: str, conf: Path) -> list[str]:
    """The command running nginx in the foreground on ``conf`` (prefix: the conf's directory)."""
    return [nginx, "-p", str(conf.parent), "-c", str(conf)]


def default_impl() -> str:
    """``httptools`` when it can be imported, else ``aiohttp``."""
    try:
        import httptools
    except ImportError:
        return "aiohttp"
    return "httptools" if httptools.HttpRequestParser else "aiohttp"


async def answer(request: web.BaseRequest) -> web.Response:
    await request.read()
    return web.Response(body=BODY, content_type=CONTENT_TYPE)


def httptools_protocol() -> type[asyncio.Protocol]:
    import httptools

    response = (
        b"HTTP/1.1 200 OK\r\nServer: bench-upstream\r\nContent-Type: " + CONTENT_TYPE.encode()
        + b"\r\nContent-Length: " + str(len(BODY)).encode() + b"\r\n\r\n" + BODY
    )

    class Answer(asyncio.Protocol):
        """Parse requests (bodies included) with httptools; answer each complete one with the body."""

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport: asyncio.Transport = transport  # type: ignore[assignment]
            self.parser = httptools.HttpRequestParser(self)

        def data_received(self, data: bytes) -> None:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserError:
                self.transport.write(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                self.transport.close()

        def on_message_complete(self) -> None:
            self.transport.write(response)
            if not self.parser.should_keep_alive():
                self.transport.close()

    return Answer


async def serve(port: int, impl: str) -> None:
    loop = asyncio.get_running_loop()
    if impl == "httptools":
        await loop.create_server(httptools_protocol(), "127.0.0.1", port, backlog=1024)
    else:
        await loop.create_server(web.Server(answer, access_log=None), "127.0.0.1", port, backlog=1024)
    await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--port", type=int, required=True, help="port to listen on (127.0.0.1)")
    parser.add_argument("--impl", choices=("httptools", "aiohttp"), default=default_impl(),
                        help="which Python server answers (default: httptools when installed)")
    args = parser.parse_args()
    asyncio.run(serve(args.port, args.impl))


if __name__ == "__main__":
    main()
