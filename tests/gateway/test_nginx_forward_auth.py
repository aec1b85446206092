"""A real nginx in front, asking labgate with auth_request: the shipped example, end to end.

nginx (the Debian package) runs deploy/nginx/labgate-forward-auth.conf with
only its addresses changed, in front of a recording loopback upstream, and
asks an in-process labgate.  What the appliance sees is what nginx forwarded.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from multidict import CIMultiDict
from yarl import URL

from tests.conftest import (
    RecordingUpstream,
    free_port,
    gateway_starter,
    mint,
    raw_request,
)

EXAMPLE = Path(__file__).parent.parent.parent / "deploy" / "nginx" / "labgate-forward-auth.conf"
HOST = "svt.lab.example"
INSTALL_HINT = "nginx is not installed: run `apt-get install -y nginx-light` (bash .ci/run does it when missing)"


def nginx_binary() -> str:
    """nginx, or a skip with the install hint; under CI a missing nginx fails instead."""
    found = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK) else None)
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail(INSTALL_HINT)
        pytest.skip(INSTALL_HINT)
    return found


def render_example(*, listen_port: int, labgate_port: int, appliance_port: int) -> str:
    """The shipped server block with this test's addresses; every replaced line must exist exactly once."""
    text = EXAMPLE.read_text()
    replacements = [
        ("    server 127.0.0.1:8080;", f"    server 127.0.0.1:{labgate_port};"),
        ("    listen 443 ssl;", f"    listen 127.0.0.1:{listen_port};"),
        ("    ssl_certificate     /etc/nginx/tls/svt.lab.example.crt;\n", ""),
        ("    ssl_certificate_key /etc/nginx/tls/svt.lab.example.key;\n", ""),
        ("proxy_pass https://10.0.0.20;", f"proxy_pass http://127.0.0.1:{appliance_port};"),
    ]
    for old, new in replacements:
        assert text.count(old) == 1, f"{EXAMPLE} no longer has {old.strip()!r} exactly once"
        text = text.replace(old, new)
    return text


class Nginx:
    """One nginx process in the foreground, all of its files under one folder."""

    def __init__(self, binary: str, folder: Path, server_block: str) -> None:
        self.folder = folder
        folder.mkdir()
        (folder / "site.conf").write_text(server_block)
        temp = {name: folder / name for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")}
        (folder / "nginx.conf").write_text(
            "master_process off;\n"  # one process as the test's own user: nothing to hand to workers
            "events { worker_connections 64; }\n"
            "http {\n"
            "    access_log off;\n"
            + "".join(f"    {name}_temp_path {path};\n" for name, path in temp.items())
            + f"    include {folder / 'site.conf'};\n"
            "}\n"
        )
        self.stderr_path = folder / "stderr.log"
        self.args = [
            binary, "-e", "stderr", "-p", str(folder), "-c", str(folder / "nginx.conf"),
            "-g", f"daemon off; pid {folder / 'nginx.pid'}; error_log stderr;",
        ]
        self.process: subprocess.Popen[bytes] | None = None

    async def start(self, port: int) -> None:
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(self.args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        for _ in range(200):  # up to about 10 s
            if self.process.poll() is not None:
                pytest.fail(f"nginx exited with {self.process.returncode}: {self.errors()}")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            await writer.wait_closed()
            return
        self.stop()
        pytest.fail(f"nginx did not listen on {port}: {self.errors()}")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def errors(self) -> str:
        return self.stderr_path.read_text(errors="replace")[-4000:]


FrontStarter = Callable[..., Awaitable[str]]


@pytest.fixture
async def start_front(tmp_path: Path, upstream: RecordingUpstream) -> AsyncIterator[FrontStarter]:
    """Start labgate and nginx in front of the recording upstream; returns nginx's URL."""
    binary = nginx_binary()
    fronts: list[Nginx] = []
    async with gateway_starter(tmp_path, "http1") as start_gateway:

        async def start(*, labgate_running: bool = True) -> str:
            labgate_port = free_port()
            if labgate_running:
                gateway = await start_gateway(
                    upstream.url,
                    upstream={"path_prefix": None, "host": HOST},
                    endpoints={"forward_auth": "/forward-auth"},
                    trusted_proxies=["127.0.0.1"],
                )
                labgate_port = gateway.port
            listen_port = free_port()
            appliance_port = URL(upstream.url).port
            assert appliance_port is not None
            block = render_example(listen_port=listen_port, labgate_port=labgate_port, appliance_port=appliance_port)
            nginx = Nginx(binary, tmp_path / f"nginx-{len(fronts)}", block)
            fronts.append(nginx)
            await nginx.start(listen_port)
            return f"http://127.0.0.1:{listen_port}"

        try:
            yield start
        finally:
            for nginx in fronts:
                nginx.stop()


async def send(
    url: str, target: str, token: str | None = None, *, method: str = "GET", data: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, CIMultiDict[str], bytes]:
    headers = {"Host": HOST, **(headers or {})}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    async with aiohttp.ClientSession() as session:
        async with session.request(method, URL(url + target, encoded=True), headers=headers, data=data) as response:
            return response.status, response.headers.copy(), await response.read()


async def test_allowed_request_reaches_the_upstream_through_nginx(upstream: RecordingUpstream, start_front: FrontStarter) -> None:
    front = await start_front()
    token = mint()
    status, headers, body = await send(front, "/api/h%6Fsts?limit=1&offset=0", token)
    assert status == 200
    [received] = upstream.received
    assert (received.method, received.raw_path) == ("GET", "/api/h%6Fsts?limit=1&offset=0")
    assert received.headers["authorization"] == [f"Bearer {token}"]
    assert received.headers["x-request-id"] == headers.getall("X-Request-ID")  # labgate's id, in both directions
    assert b'"path"' in body


async def test_a_body_passes_through_nginx_and_labgate_never_needs_it(
    upstream: RecordingUpstream, start_front: FrontStarter
) -> None:
    front = await start_front()
    status, _, _ = await send(front, "/api/backups/b1/restore", mint(), method="POST", data=b"x" * 300_000)
    assert status == 200
    assert [(r.method, r.raw_path, r.body_size) for r in upstream.received] == [("POST", "/api/backups/b1/restore", 300_000)]


async def test_denied_request_gets_403_with_the_reason_and_never_reaches_the_upstream(
    upstream: RecordingUpstream, start_front: FrontStarter
) -> None:
    front = await start_front()
    token = mint()
    status, headers, body = await send(front, "/api/hosts?sort=name", token)
    assert status == 403
    assert headers["X-Labgate-Reason"] == "query_param_not_allowed"
    [request_id] = headers.getall("X-Request-ID")
    assert json.loads(body) == {"reason": "query_param_not_allowed", "request_id": request_id}
    [challenge] = headers.getall("WWW-Authenticate")  # RFC 6750 section 3: MUST, when the token does not allow it
    assert challenge.startswith('Bearer realm="labgate", error="insufficient_scope", error_description="')
    assert token.encode() not in body
    assert upstream.received == []


async def test_missing_token_gets_401_with_www_authenticate(upstream: RecordingUpstream, start_front: FrontStarter) -> None:
    front = await start_front()
    status, headers, body = await send(front, "/api/hosts")
    assert status == 401
    assert headers["X-Labgate-Reason"] == "missing_token"
    [challenge] = headers.getall("WWW-Authenticate")
    assert challenge == 'Bearer realm="labgate"'  # RFC 6750 section 3.1: no error code without credentials
    assert headers.getall("X-Labgate-Reason") == ["missing_token"]
    assert headers["Content-Type"] == "application/json"
    assert upstream.received == []


async def test_refusals_nginx_would_turn_into_500_keep_labgates_status(
    upstream: RecordingUpstream, start_front: FrontStarter
) -> None:
    """auth_request knows only 2xx/401/403; the example's @labgate_refused restores 400 and 405."""
    front = await start_front()
    token = mint()
    port = URL(front).port
    assert port is not None
    head = f"GET /api/hosts/%2e%2e/admin HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
    ambiguous = await raw_request(port, head)
    assert (ambiguous.status, ambiguous.headers["x-labgate-reason"]) == (400, "ambiguous_path")
    override = await send(front, "/api/hosts", token, headers={"X-HTTP-Method-Override": "DELETE"})
    assert (override[0], override[1]["X-Labgate-Reason"]) == (400, "method_override")
    unknown_method = await send(front, "/api/hosts", token, method="PROPFIND")
    assert (unknown_method[0], unknown_method[1]["X-Labgate-Reason"]) == (405, "method_not_supported")
    assert upstream.received == []


async def test_a_clients_own_forward_auth_headers_change_nothing(upstream: RecordingUpstream, start_front: FrontStarter) -> None:
    front = await start_front()
    token = mint()
    spoofed = {"X-Original-URI": "/api/hosts", "X-Original-Method": "GET", "X-Forwarded-Uri": "/api/hosts"}
    status, headers, _ = await send(front, "/api/admin", token, method="DELETE", headers=spoofed)
    assert (status, headers["X-Labgate-Reason"]) == (403, "route_not_allowed")
    assert upstream.received == []


async def test_labgate_unreachable_means_503_and_nothing_forwarded(
    upstream: RecordingUpstream, start_front: FrontStarter
) -> None:
    front = await start_front(labgate_running=False)
    status, _, body = await send(front, "/api/hosts", mint())
    assert status == 503
    assert b'"reason":"forward_auth_unavailable"' in body
    assert upstream.received == []
