"""The introspect source through a running gateway: the authorization server decides validity, the pack the rest."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import (
    GatewayStarter,
    RecordingUpstream,
    RunningGateway,
    app_on_loopback,
    free_port,
)

ACTIVE = {"active": True, "sub": "svc", "role": "reader", "scope": "read"}


@pytest.fixture
async def introspection() -> AsyncIterator[tuple[dict[str, dict[str, object]], str]]:
    answers: dict[str, dict[str, object]] = {}

    async def introspect(request: web.Request) -> web.Response:
        form = await request.post()
        return web.json_response(answers.get(str(form.get("token")), {"active": False}))

    app = web.Application()
    app.router.add_post("/introspect", introspect)
    async with app_on_loopback(app) as url:
        yield answers, f"{url}/introspect"


async def start(start_gateway: GatewayStarter, tmp_path: Path, upstream_url: str, endpoint: str) -> RunningGateway:
    (tmp_path / "introspect.secret").write_text("client-secret")
    source = {
        "type": "introspect",
        "endpoint": endpoint,
        "client_id": "labgate",
        "client_secret_file": "introspect.secret",
        "types": [{"token_type": "reader", "match": {"role": "reader"}}],
    }
    return await start_gateway(upstream_url, upstream={"token_source": source})


async def get(gateway: RunningGateway, path: str, token: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gateway.url}/demo{path}", headers={"Authorization": f"Bearer {token}"}) as response:
            return response.status, await response.json(content_type=None)


async def test_an_active_token_is_held_to_its_type(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, tmp_path: Path, introspection: tuple[dict[str, dict[str, object]], str]
) -> None:
    answers, endpoint = introspection
    answers["opaque-1"] = ACTIVE
    gateway = await start(start_gateway, tmp_path, upstream.url, endpoint)
    assert (await get(gateway, "/api/hosts?limit=5", "opaque-1"))[0] == 200
    status, body = await get(gateway, "/api/hosts?sort=name", "opaque-1")  # the cached answer; the policy still runs
    assert (status, body["reason"]) == (403, "query_param_not_allowed")
    assert [r.raw_path for r in upstream.received] == ["/api/hosts?limit=5"]
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{gateway.url}/metrics") as response:
            metrics = await response.text()
    assert 'labgate_introspection_requests_total{result="active",upstream="demo"} 1.0' in metrics


async def test_an_inactive_token_is_401_and_never_forwarded(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, tmp_path: Path, introspection: tuple[dict[str, dict[str, object]], str]
) -> None:
    _, endpoint = introspection
    gateway = await start(start_gateway, tmp_path, upstream.url, endpoint)
    status, body = await get(gateway, "/api/hosts", "revoked-or-made-up")
    assert (status, body["reason"]) == (401, "token_inactive")
    assert upstream.received == []


async def test_an_unreachable_introspection_endpoint_is_503_never_a_pass(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, tmp_path: Path
) -> None:
    gateway = await start(start_gateway, tmp_path, upstream.url, f"http://127.0.0.1:{free_port()}/introspect")
    status, body = await get(gateway, "/api/hosts", "opaque-1")
    assert (status, body["reason"]) == (503, "introspection_unavailable")
    assert upstream.received == []
