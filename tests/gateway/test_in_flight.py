"""max_in_flight through real sockets: requests past the cap wait, then get 503 upstream_busy, never forwarded."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import pytest
from aiohttp import web

from tests.conftest import GatewayStarter, app_on_loopback, mint

PACK = """
pack: demo
token_types:
  reader:
    routes: [GET /api/hold, GET /api/hosts]
  admin:
    routes: [GET /api/hold, GET /api/hosts]
    max_in_flight: 1
  office: {routes: [GET /api/hosts]}
  session: {routes: [GET /api/hosts]}
"""


@dataclass
class HoldingAppliance:
    """Answers /api/hold only when released; counts how many requests it holds at once."""

    url: str = ""
    release: asyncio.Event = field(default_factory=asyncio.Event)
    holding: int = 0
    most_at_once: int = 0
    received: list[str] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        self.received.append(request.path)
        if request.path == "/api/hold":
            self.holding += 1
            self.most_at_once = max(self.most_at_once, self.holding)
            try:
                await self.release.wait()
            finally:
                self.holding -= 1
        return web.json_response({"ok": True})

    async def until_holding(self, count: int) -> None:
        for _ in range(500):  # bounded: 5 s
            if self.holding >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"the appliance never held {count} requests")


@pytest.fixture
async def appliance() -> AsyncIterator[HoldingAppliance]:
    held = HoldingAppliance()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", held.handle)
    async with app_on_loopback(app) as url:
        held.url = url
        yield held
        held.release.set()


async def get(url: str, role: str = "reader", path: str = "/api/hold") -> tuple[int, dict[str, str], dict[str, object]]:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/demo{path}", headers={"Authorization": f"Bearer {mint({'role': role})}"}) as response:
            return response.status, dict(response.headers), await response.json(content_type=None)


async def metrics(url: str) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/metrics") as response:
            return await response.text()


async def test_past_max_in_flight_a_request_waits_then_gets_503_and_is_not_forwarded(
    appliance: HoldingAppliance, start_gateway: GatewayStarter
) -> None:
    gateway = await start_gateway(appliance.url, pack_text=PACK, upstream={"max_in_flight": 2, "queue_timeout": "1s"})
    held = [asyncio.create_task(get(gateway.url)) for _ in range(2)]
    await appliance.until_holding(2)
    status, headers, body = await get(gateway.url)
    assert (status, body["reason"]) == (503, "upstream_busy")
    assert set(body) == {"error", "error_description", "reason", "request_id"}
    assert headers["Retry-After"] == "1"
    assert appliance.received == ["/api/hold", "/api/hold"]  # the refused request never reached it
    appliance.release.set()
    assert [status for status, _, _ in await asyncio.gather(*held)] == [200, 200]
    assert (await get(gateway.url))[0] == 200  # places are given back
    assert appliance.most_at_once == 2
    text = await metrics(gateway.url)
    assert 'labgate_upstream_busy_total{token_type="reader",upstream="demo"} 1.0' in text
    assert 'labgate_upstream_in_flight{upstream="demo"} 0.0' in text


async def test_a_queued_request_goes_when_a_place_frees(appliance: HoldingAppliance, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(appliance.url, pack_text=PACK, upstream={"max_in_flight": 1, "queue_timeout": "30s"})
    first = asyncio.create_task(get(gateway.url))
    await appliance.until_holding(1)
    second = asyncio.create_task(get(gateway.url, path="/api/hosts"))
    for _ in range(500):  # bounded: until the second request shows as queued
        if 'labgate_upstream_queued{upstream="demo"} 1.0' in await metrics(gateway.url):
            break
        await asyncio.sleep(0.01)
    else:
        raise AssertionError("the second request never queued")
    assert appliance.received == ["/api/hold"]  # waiting, not forwarded
    appliance.release.set()
    assert [(await first)[0], (await second)[0]] == [200, 200]
    assert appliance.received == ["/api/hold", "/api/hosts"]
    assert 'labgate_upstream_queued{upstream="demo"} 0.0' in await metrics(gateway.url)


async def test_a_token_types_own_cap_leaves_other_types_alone(appliance: HoldingAppliance, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(appliance.url, pack_text=PACK, upstream={"max_in_flight": 5, "queue_timeout": 0})
    held = asyncio.create_task(get(gateway.url, role="admin"))
    await appliance.until_holding(1)
    status, headers, body = await get(gateway.url, role="admin")
    assert (status, body["reason"]) == (503, "upstream_busy") and "token type admin" in str(body["error_description"])
    assert (await get(gateway.url, role="reader", path="/api/hosts"))[0] == 200  # another type is not held back
    appliance.release.set()
    assert (await held)[0] == 200
