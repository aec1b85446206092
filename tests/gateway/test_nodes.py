"""Several nodes per upstream, through real sockets: one down, one hanging, failover only when safe."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from tests.conftest import GatewayStarter, app_on_loopback, free_port, mint


@dataclass
class ApplianceNode:
    """One node of a mock appliance: records what reached it; its health answer can be set."""

    name: str
    url: str = ""
    received: list[tuple[str, str, bytes]] = field(default_factory=list)
    health_status: int = 200
    hold: asyncio.Event | None = None

    async def handle(self, request: web.Request) -> web.Response:
        if request.path == "/health":
            return web.Response(status=self.health_status)
        body = await request.read()
        self.received.append((request.method, request.raw_path, body))
        if self.hold is not None and request.path == "/api/hold":
            await self.hold.wait()
        return web.json_response({"node": self.name})


@contextlib.asynccontextmanager
async def node(name: str) -> AsyncIterator[ApplianceNode]:
    served = ApplianceNode(name)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", served.handle)
    async with app_on_loopback(app) as url:
        served.url = url
        yield served


@contextlib.asynccontextmanager
async def hanging_node() -> AsyncIterator[tuple[str, list[bytes]]]:
    """Accepts connections and reads, never answers: what a wedged controller does."""
    seen: list[bytes] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            seen.append(await reader.read(65536))
            await reader.read()  # until labgate gives up and closes
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        server.close()


def refusing_node() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there: connections are refused


async def call(url: str, method: str = "GET", path: str = "/api/hosts", body: bytes | None = None) -> tuple[int, dict[str, object]]:
    headers = {"Authorization": f"Bearer {mint({'role': 'admin'})}"}
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"{url}/demo{path}", headers=headers, data=body) as response:
            return response.status, await response.json(content_type=None)


async def own(url: str, path: str) -> str:
    async with aiohttp.ClientSession() as session:
        async with session.get(url + path) as response:
            return await response.text()


async def test_requests_go_round_robin_and_a_refusing_node_is_failed_over_and_left_out(start_gateway: GatewayStarter) -> None:
    async with node("a") as a, node("b") as b:
        down = refusing_node()
        gateway = await start_gateway(a.url, upstream={"url": None, "nodes": [down, a.url, b.url], "node_backoff": "60s"})
        answers = [await call(gateway.url) for _ in range(6)]
        assert [status for status, _ in answers] == [200] * 6  # the refused connection sent nothing: failed over
        assert len(a.received) == 3 and len(b.received) == 3
        ready = await own(gateway.url, "/readyz")
        assert '"state": "backoff"' in ready and ready.count('"state": "up"') == 2
        metrics = await own(gateway.url, "/metrics")
        down_label = down.removeprefix("http://")
        assert f'labgate_upstream_node_up{{node="{down_label}",upstream="demo"}} 0.0' in metrics
        assert 'labgate_upstream_failovers_total{upstream="demo"} 1.0' in metrics


async def test_a_post_whose_node_refuses_the_connection_reaches_another_node_once(start_gateway: GatewayStarter) -> None:
    async with node("a") as a:
        gateway = await start_gateway(a.url, upstream={"url": None, "nodes": [refusing_node(), a.url]})
        status, answer = await call(gateway.url, "POST", "/api/backups/b1/restore", b'{"name": "vm"}')
        assert (status, answer) == (200, {"node": "a"})
        assert a.received == [("POST", "/api/backups/b1/restore", b'{"name": "vm"}')]


async def test_a_hanging_node_times_out_once_is_never_retried_and_is_left_out(start_gateway: GatewayStarter) -> None:
    async with node("a") as a, hanging_node() as (hanging, seen):
        gateway = await start_gateway(
            a.url, upstream={"url": None, "nodes": [hanging, a.url], "timeouts": {"connect": 2, "read": 0.5}, "node_backoff": "60s"}
        )
        status, answer = await call(gateway.url, "POST", "/api/backups/b1/restore", b"{}")
        assert (status, answer["reason"]) == (504, "upstream_timeout")  # may have reached it: never sent again
        assert a.received == [] and len(seen) == 1
        status, answer = await call(gateway.url, "GET", "/api/hosts")
        assert (status, answer) == (200, {"node": "a"})
        assert [(await call(gateway.url))[0] for _ in range(4)] == [200] * 4
        assert len(seen) == 1 and len(a.received) == 5  # the hanging node was left out


async def test_a_bodiless_get_that_times_out_is_not_failed_over(start_gateway: GatewayStarter) -> None:
    async with node("a") as a, hanging_node() as (hanging, seen):
        gateway = await start_gateway(a.url, upstream={"url": None, "nodes": [hanging, a.url], "timeouts": {"connect": 2, "read": 0.5}})
        status, answer = await call(gateway.url)
        assert (status, answer["reason"]) == (504, "upstream_timeout")  # the appliance may be working on it
        assert a.received == []


# Active checks for the tests below. The timeout only bounds a check that hangs; a loopback node
# answers at once. A tight one (0.1 s) let a loaded test machine's slow event loop fail the
# healthy node's check too.
HEALTH = {"path": "/health", "interval": 1, "timeout": 0.9, "expect": [200, 204]}


async def node_states(url: str) -> dict[str, str]:
    """Each node's state as ``/readyz`` reports it, by node address."""
    ready = json.loads(await own(url, "/readyz"))
    return {entry["node"]: entry["state"] for nodes in ready["nodes"].values() for entry in nodes}


async def until_states(url: str, wanted: dict[str, str], what: str) -> None:
    for _ in range(200):  # bounded: 10 s for the checks to report
        if await node_states(url) == wanted:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"{what}: the nodes stayed {await node_states(url)}")


async def test_active_health_checks_leave_an_unhealthy_node_out(start_gateway: GatewayStarter) -> None:
    async with node("a") as a, node("b") as b:
        b.health_status = 503
        gateway = await start_gateway(a.url, upstream={"url": None, "nodes": [a.url, b.url], "health": HEALTH})
        label_a, label_b = a.url.removeprefix("http://"), b.url.removeprefix("http://")
        await until_states(gateway.url, {label_a: "up", label_b: "unhealthy"}, "node b was never found unhealthy")
        assert [(await call(gateway.url))[1] for _ in range(4)] == [{"node": "a"}] * 4
        assert b.received == []
        b.health_status = 204
        await until_states(gateway.url, {label_a: "up", label_b: "up"}, "node b never came back")
        assert {(await call(gateway.url))[1]["node"] for _ in range(4)} == {"a", "b"}


async def test_with_every_node_unhealthy_requests_still_go_to_them_in_turn(start_gateway: GatewayStarter) -> None:
    async with node("a") as a, node("b") as b:
        a.health_status = b.health_status = 503
        gateway = await start_gateway(a.url, upstream={"url": None, "nodes": [a.url, b.url], "health": HEALTH})
        label_a, label_b = a.url.removeprefix("http://"), b.url.removeprefix("http://")
        await until_states(gateway.url, {label_a: "unhealthy", label_b: "unhealthy"}, "the nodes were never found unhealthy")
        answers = [await call(gateway.url) for _ in range(4)]
        assert [status for status, _ in answers] == [200] * 4  # refusing for certain is no better than trying
        assert len(a.received) == 2 and len(b.received) == 2


async def test_least_in_flight_sends_past_a_busy_node(start_gateway: GatewayStarter) -> None:
    async with node("a") as a, node("b") as b:
        a.hold = b.hold = asyncio.Event()
        pack = "pack: demo\ntoken_types:\n  admin: {path_prefixes: [/api]}\n  reader: {path_prefixes: [/api]}\n  office: {path_prefixes: [/api]}\n  session: {path_prefixes: [/api]}\n"
        gateway = await start_gateway(a.url, pack_text=pack, upstream={"url": None, "nodes": [a.url, b.url], "balance": "least_in_flight"})
        held = asyncio.create_task(call(gateway.url, path="/api/hold"))
        for _ in range(500):  # bounded
            if a.received or b.received:
                break
            await asyncio.sleep(0.01)
        busy, idle = (a, b) if a.received else (b, a)
        assert [(await call(gateway.url))[1]["node"] for _ in range(3)] == [idle.name] * 3
        assert len(busy.received) == 1
        a.hold.set()
        assert (await held)[0] == 200


@contextlib.asynccontextmanager
async def slamming_node() -> AsyncIterator[tuple[str, list[bytes]]]:
    """Reads a request, then closes the connection without a byte of an answer."""
    seen: list[bytes] = []

    async def slam(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            seen.append(await reader.read(65536))
        writer.close()

    server = await asyncio.start_server(slam, "127.0.0.1", 0)
    try:
        yield f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", seen
    finally:
        server.close()


async def test_a_bodiless_get_cut_before_any_answer_goes_to_another_node(start_http1_gateway: GatewayStarter) -> None:
    async with node("a") as a, slamming_node() as (slammer, seen):
        gateway = await start_http1_gateway(a.url, upstream={"url": None, "nodes": [slammer, a.url]})
        assert await call(gateway.url) == (200, {"node": "a"})
        assert len(seen) == 1 and [r[:2] for r in a.received] == [("GET", "/api/hosts")]


async def test_a_post_cut_before_any_answer_is_never_sent_again(start_gateway: GatewayStarter) -> None:
    async with node("a") as a, slamming_node() as (slammer, seen):
        gateway = await start_gateway(a.url, upstream={"url": None, "nodes": [slammer, a.url]})
        status, answer = await call(gateway.url, "POST", "/api/backups/b1/restore", b"{}")
        assert (status, answer["reason"]) == (502, "upstream_unreachable")  # its body may have reached the node
        assert len(seen) == 1 and a.received == []
