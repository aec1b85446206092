"""Hot reload: a good new version is served, a bad one refused whole, requests in flight keep theirs."""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from proxy.cli import main
from tests.conftest import TEST_PACK, RecordingUpstream, free_port, mint, write_config
from tests.gateway.serving import GatedUpstream, get, metrics_text, serving
from tests.labgate_process import labgate_serving

WITH_NEW_ROUTE = TEST_PACK.replace("      - HEAD /api/hosts\n", "      - HEAD /api/hosts\n      - GET /api/new\n")
BROKEN = TEST_PACK.replace("      - GET /api/hosts\n", "      - FETCH /api/hosts\n", 1)  # line 6 of the pack
POLL = {"watch": True, "interval": 0.1}


def pack_file(tmp_path: Path) -> Path:
    return tmp_path / "policies" / "demo.yaml"


def edit_config(config: Path, change: Callable[[dict[str, Any]], None]) -> None:
    document = yaml.safe_load(config.read_text())
    change(document)
    config.write_text(yaml.safe_dump(document, sort_keys=False))


async def eventually(check: Callable[[], Awaitable[bool] | bool], *, attempts: int = 100) -> None:
    """Poll ``check`` (up to ``attempts`` times, 50 ms apart) until it holds."""
    for _ in range(attempts):
        result = check()
        if await result if inspect.isawaitable(result) else result:
            return
        await asyncio.sleep(0.05)
    raise AssertionError("the condition did not hold in time")


async def answers(url: str, expected: int, token: str | None = "minted") -> bool:
    """Whether a GET on ``url`` answers ``expected`` (a listener not up yet does not)."""
    try:
        return (await get(url, mint() if token == "minted" else token))[0] == expected
    except aiohttp.ClientError:
        return False


async def status_of(url: str) -> int:
    return (await get(url, mint()))[0]


async def readyz(url: str) -> tuple[int, dict[str, Any]]:
    status, body = await get(f"{url}/readyz")
    return status, body


async def test_a_route_added_to_a_pack_is_allowed_after_a_reload(upstream: RecordingUpstream, tmp_path: Path) -> None:
    config = write_config(tmp_path, upstream.url, reload={"watch": False})
    async with serving(config) as (gateway, url):
        status, body = await get(f"{url}/demo/api/new", mint())
        assert (status, body["reason"]) == (403, "route_not_allowed")
        pack_file(tmp_path).write_text(WITH_NEW_ROUTE)
        assert await gateway.reload("test") is True
        assert await status_of(f"{url}/demo/api/new") == 200
        assert await status_of(f"{url}/demo/api/hosts") == 200  # what was allowed stays allowed
        ready_status, ready = await readyz(url)
        metrics = await metrics_text(url)
    assert ready_status == 200
    assert ready["config"]["version"] == 2 and ready["config"]["last_reload"] == "success"
    assert ready["config"]["problems"] == []
    assert 'labgate_config_reloads_total{result="success"} 1.0' in metrics
    assert 'labgate_config_reloads_total{result="failure"} 0.0' in metrics
    assert [r.raw_path for r in upstream.received] == ["/api/new", "/api/hosts"]


async def test_an_invalid_pack_is_refused_and_the_last_good_version_keeps_serving(
    upstream: RecordingUpstream, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = write_config(tmp_path, upstream.url, reload={"watch": False})
    caplog.set_level(logging.ERROR, logger="labgate")
    async with serving(config) as (gateway, url):
        pack_file(tmp_path).write_text(BROKEN.replace("      - GET /api/slow\n", "      - GET /api/slow\n      - GET /api/new\n"))
        assert await gateway.reload("test") is False
        assert await status_of(f"{url}/demo/api/hosts") == 200  # still the old version ...
        assert (await get(f"{url}/demo/api/new", mint()))[1]["reason"] == "route_not_allowed"  # ... all of it
        ready_status, ready = await readyz(url)
        metrics = await metrics_text(url)
    problem = f"{pack_file(tmp_path)}:6: route 'FETCH /api/hosts': method must be one of"
    assert ready_status == 200  # the last good version is ready to serve
    assert (ready["status"], ready["config"]["version"], ready["config"]["last_reload"]) == ("ready", 1, "failure")
    assert any(p.startswith(problem) for p in ready["config"]["problems"]), ready
    assert 'labgate_config_reloads_total{result="failure"} 1.0' in metrics
    assert 'labgate_config_reloads_total{result="success"} 0.0' in metrics
    assert problem in caplog.text and "still serving config version 1" in caplog.text


async def test_a_fixed_config_after_a_refused_one_is_served(upstream: RecordingUpstream, tmp_path: Path) -> None:
    config = write_config(tmp_path, upstream.url, reload={"watch": False})
    async with serving(config) as (gateway, url):
        pack_file(tmp_path).write_text(BROKEN)
        assert await gateway.reload("test") is False
        pack_file(tmp_path).write_text(WITH_NEW_ROUTE)
        assert await gateway.reload("test") is True
        assert await status_of(f"{url}/demo/api/new") == 200
        _, ready = await readyz(url)
    assert (ready["config"]["version"], ready["config"]["last_reload"], ready["config"]["problems"]) == (2, "success", [])


@pytest.mark.parametrize(
    "change, setting",
    [
        (lambda d: d["listen"].update(port=free_port()), "listen.port"),
        (lambda d: d["listen"].update(address="localhost"), "listen.address"),
        (lambda d: d["limits"].update(header_timeout=5), "limits.header_timeout"),
        (lambda d: d["limits"].update(max_header_block_bytes=32768), "limits.max_header_block_bytes"),
        (lambda d: d["limits"].update(max_connections=10), "limits.max_connections"),
    ],
    ids=["port", "address", "header_timeout", "max_header_block_bytes", "max_connections"],
)
async def test_a_config_that_changes_the_listener_is_refused_until_a_restart(
    upstream: RecordingUpstream, tmp_path: Path, change: Callable[[dict[str, Any]], None], setting: str
) -> None:
    config = write_config(tmp_path, upstream.url, reload={"watch": False})
    async with serving(config) as (gateway, url):
        pack_file(tmp_path).write_text(WITH_NEW_ROUTE)
        edit_config(config, change)
        assert await gateway.reload("test") is False
        assert (await get(f"{url}/demo/api/new", mint()))[0] == 403  # refused whole, the pack change too
        _, ready = await readyz(url)
    [problem] = ready["config"]["problems"]
    assert problem.startswith(f"{config}: {setting} changed") and "apply only when labgate restarts" in problem


async def test_a_pack_file_change_is_picked_up_by_the_watcher(upstream: RecordingUpstream, tmp_path: Path) -> None:
    config = write_config(tmp_path, upstream.url, reload=POLL)
    async with serving(config) as (gateway, url):
        assert await status_of(f"{url}/demo/api/new") == 403
        pack_file(tmp_path).write_text(WITH_NEW_ROUTE)
        await eventually(lambda: answers(f"{url}/demo/api/new", 200))
        assert gateway.version == 2


async def test_a_pack_replaced_by_rename_is_picked_up(upstream: RecordingUpstream, tmp_path: Path) -> None:
    """Editors and Kubernetes ConfigMaps replace files by renaming a new one over them."""
    config = write_config(tmp_path, upstream.url, reload=POLL)
    async with serving(config) as (gateway, url):
        replacement = tmp_path / "demo.yaml.new"
        replacement.write_text(WITH_NEW_ROUTE)
        os.replace(replacement, pack_file(tmp_path))
        await eventually(lambda: answers(f"{url}/demo/api/new", 200))


async def test_a_new_pack_in_a_policies_folder_and_the_config_naming_it_are_picked_up(
    upstream: RecordingUpstream, tmp_path: Path
) -> None:
    config = write_config(tmp_path, upstream.url, reload=POLL)
    async with serving(config) as (gateway, url):
        other = WITH_NEW_ROUTE.replace("pack: demo", "pack: other")
        (tmp_path / "policies" / "other.yaml").write_text(other)
        edit_config(config, lambda d: d["upstreams"][0].update(pack="other"))
        await eventually(lambda: answers(f"{url}/demo/api/new", 200))
        status, body = await get(f"{url}/demo/api/nothing", mint())
    assert (status, body["reason"]) == (403, "route_not_allowed")


async def test_a_config_file_change_is_picked_up_by_the_watcher(upstream: RecordingUpstream, tmp_path: Path) -> None:
    config = write_config(tmp_path, upstream.url, reload=POLL)
    async with serving(config) as (gateway, url):
        edit_config(config, lambda d: d.update(endpoints={"health": "/livez"}))
        await eventually(lambda: answers(f"{url}/livez", 200, token=None))
        assert gateway.config.endpoints.health == "/livez"


async def test_a_refused_change_is_not_retried_until_the_files_change_again(
    upstream: RecordingUpstream, tmp_path: Path
) -> None:
    config = write_config(tmp_path, upstream.url, reload=POLL)
    async with serving(config) as (gateway, url):
        pack_file(tmp_path).write_text(BROKEN)
        await eventually(lambda: _has_failures(url, 1))
        for _ in range(5):  # several polls later: still the one failure
            await asyncio.sleep(0.1)
        assert await _failures(url) == 1
        pack_file(tmp_path).write_text(WITH_NEW_ROUTE)
        await eventually(lambda: answers(f"{url}/demo/api/new", 200))


async def test_a_request_in_flight_finishes_under_the_version_it_started_with(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="labgate")
    async with GatedUpstream() as appliance:
        config = write_config(tmp_path, appliance.url, reload={"watch": False})
        async with serving(config) as (gateway, url):
            slow = asyncio.create_task(get(f"{url}/demo/api/slow", mint()))
            await asyncio.wait_for(appliance.arrived.wait(), 5)
            pack_file(tmp_path).write_text(TEST_PACK.replace("      - GET /api/slow\n", ""))
            assert await gateway.reload("test") is True
            assert gateway.draining == 1  # version 1 still has the slow request
            status, body = await get(f"{url}/demo/api/slow", mint())
            assert (status, body["reason"]) == (403, "route_not_allowed")  # the next one: version 2
            assert "config version 1 closed" not in caplog.text
            appliance.release.set()
            assert await asyncio.wait_for(slow, 5) == (200, {"path": "/api/slow"})
            await eventually(lambda: gateway.draining == 0)
    assert "config version 1 closed after its last request" in caplog.text
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "labgate.decisions"]
    slow_lines = [(line["decision"], line["rule"]) for line in lines if line["path"] == "/api/slow"]
    assert slow_lines == [("deny", "demo/reader/routes"), ("allow", "demo/reader/routes/GET /api/slow")]
    assert appliance.paths == ["/api/slow"]


async def test_a_store_change_opens_the_new_store(upstream: RecordingUpstream, tmp_path: Path) -> None:
    config = write_config(tmp_path, upstream.url, reload={"watch": False})
    token = mint({"sub": "carol"})
    async with serving(config) as (gateway, url):
        assert await status_of(f"{url}/demo/api/hosts") == 200
        edit_config(config, lambda d: d.update(store={"type": "sqlite", "path": "other.db"}))
        assert await gateway.reload("test") is True
        assert await asyncio.to_thread(main, ["revoke", "--config", str(config), "--subject", "carol"]) == 0  # into other.db
        status, body = await get(f"{url}/demo/api/hosts", token)
        await eventually(lambda: gateway.draining == 0)  # the old version and its store closed
    assert (status, body["reason"]) == (401, "revoked")
    assert (tmp_path / "other.db").exists()


async def test_sighup_reloads_a_running_labgate(upstream: RecordingUpstream, tmp_path: Path) -> None:
    # No file watching: only the signal can make the change take effect.
    config = write_config(tmp_path, upstream.url, reload={"watch": False})
    async with labgate_serving(config) as (url, process):
        assert await status_of(f"{url}/demo/api/new") == 403
        pack_file(tmp_path).write_text(WITH_NEW_ROUTE)
        assert await status_of(f"{url}/demo/api/new") == 403
        process.send_signal(signal.SIGHUP)
        await eventually(lambda: answers(f"{url}/demo/api/new", 200))
        _, ready = await readyz(url)
        assert process.poll() is None
    assert (ready["config"]["version"], ready["config"]["last_reload"]) == (2, "success")


async def test_sighup_with_a_broken_pack_keeps_a_running_labgate_serving(upstream: RecordingUpstream, tmp_path: Path) -> None:
    config = write_config(tmp_path, upstream.url, reload={"watch": False})
    async with labgate_serving(config) as (url, process):
        pack_file(tmp_path).write_text(BROKEN)
        process.send_signal(signal.SIGHUP)
        await eventually(lambda: _has_failures(url, 1))
        assert await status_of(f"{url}/demo/api/hosts") == 200
        assert process.poll() is None


async def _failures(url: str) -> int:
    for line in (await metrics_text(url)).splitlines():
        if line.startswith('labgate_config_reloads_total{result="failure"}'):
            return int(float(line.split()[-1]))
    raise AssertionError("no reload failure series")


async def _has_failures(url: str, count: int) -> bool:
    return await _failures(url) == count
