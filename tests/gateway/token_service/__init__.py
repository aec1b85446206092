"""Shared parts of the token service tests: a lab pack, a labgate that issues tokens, admin and token calls."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

from proxy.issuer.secrets_hash import hash_secret
from tests.conftest import GatewayStarter, RunningGateway

ADMIN = ("admin", "the administrator's long password")
EMERGENCY = ("svtcli", "emergency-pw")
ISSUER_URL = "https://labgate.lab.example"
# Hashed once for the whole test run: scrypt is slow on purpose.
ADMIN_HASH = hash_secret(ADMIN[1])
EMERGENCY_HASH = hash_secret(EMERGENCY[1])

LAB_PACK = """
pack: lab
token_types:
  operator:
    path_prefixes: [/api]
    lifetimes: {ttl: 15m, refresh_until: 1d}
  api-client:
    routes: [GET /api/hosts]
    lifetimes: {ttl: 2h}
  emergency:
    routes: [GET /api/hosts]
    lifetimes: {idle: 10m, absolute: 24h}
"""


def issuer_section(**overrides: Any) -> dict[str, Any]:
    section: dict[str, Any] = {
        "url": ISSUER_URL,
        "key_refresh_interval": 1,
        "admin": {"username": ADMIN[0], "password_hash": ADMIN_HASH},
        "emergency_accounts": [{"username": EMERGENCY[0], "password_hash": EMERGENCY_HASH}],
    }
    section.update(overrides)
    return section


async def start_token_service(
    start: GatewayStarter, tmp_path: Path, upstream_url: str, *, source: dict[str, Any] | None = None, **issuer: Any
) -> RunningGateway:
    """labgate with an issuer, the management API and one upstream ("demo", pack "lab") taking its tokens."""
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "lab.yaml").write_text(LAB_PACK)
    token_source = source or {"type": "issuer"}
    return await start(upstream_url, upstream={"pack": "lab", "token_source": token_source}, issuer=issuer_section(**issuer))


def basic(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


async def admin_call(
    running: RunningGateway,
    method: str,
    path: str,
    *,
    body: Any = None,
    authorization: str | None = basic(*ADMIN),
    headers: dict[str, str] | None = None,
) -> tuple[int, dict[str, str], Any]:
    """A management API call; the answer's status, headers and JSON body (None when empty)."""
    sent = dict(headers or {})
    if authorization is not None:
        sent["Authorization"] = authorization
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"{running.url}/-/admin{path}", json=body, headers=sent) as response:
            text = await response.text()
            return response.status, dict(response.headers), (await response.json(content_type=None)) if text else None


GRANTS = {"password": "operator", "client_credentials": "api-client", "emergency": "emergency"}
ISSUER_SOURCE = {"type": "issuer", "grants": GRANTS}


async def token_call(
    running: RunningGateway,
    form: dict[str, str] | bytes,
    *,
    authorization: str | None = None,
    content_type: str = "application/x-www-form-urlencoded",
) -> tuple[int, dict[str, str], Any]:
    """POST to labgate's token endpoint; the answer's status, headers and JSON body."""
    headers = {"Content-Type": content_type}
    if authorization is not None:
        headers["Authorization"] = authorization
    data = form if isinstance(form, bytes) else urlencode(form).encode()
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{running.url}/oauth/token", data=data, headers=headers) as response:
            return response.status, dict(response.headers), await response.json(content_type=None)


async def api_get(running: RunningGateway, path: str, token: str) -> tuple[int, Any]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{running.url}{path}", headers={"Authorization": f"Bearer {token}"}) as response:
            return response.status, await response.json(content_type=None)


async def wait_until(condition: Callable[[], Awaitable[bool]], *, seconds: float = 5.0) -> None:
    """Poll a real server until ``condition()`` holds (another process's change); bounded."""
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.1)
