"""``python -m proxy.mocks NAME``: every mock starts, and what it announces is enough to log in."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from proxy.mocks.__main__ import MOCKS, build, parse_args
from tests.conftest import free_port


async def log_in(name: str, facts: dict[str, Any], client: aiohttp.ClientSession) -> int:
    """Log in with the announced facts; the status of the answer."""
    if name == "simplivity":
        user, password = next(iter(facts["emergency"].items()))
        form = {"grant_type": "emergency", "username": user, "password": password}
        request = client.post(facts["token_endpoint"], data=form, headers={"Authorization": "Basic c2ltcGxpdml0eTo="})
    elif name == "hcp":
        user, password = facts["local_admin"]
        form = {"grant_type": "password", "username": user, "password": password, "scope": "*", "client_id": "c", "client_secret": "s"}
        request = client.post(facts["token_endpoint"], data=form)
    elif name == "greenlake":
        form = {"grant_type": "client_credentials", "client_id": facts["client_id"], "client_secret": facts["client_secret"]}
        request = client.post(facts["token_endpoint"], data=form)
    elif name == "vcf":
        user, account = next(iter(facts["users"].items()))
        request = client.post(facts["acquire"], json={"username": user, "password": account["password"]})
    else:
        user, password = next(iter(facts["users"].items()))
        request = client.post(f"{facts['base_url']}/Login", json={"username": user, "password": base64.b64encode(password.encode()).decode()})
    async with request as response:
        body = await response.json()
        return response.status if "errList" not in body or not body["errList"] else 401


@pytest.mark.parametrize("name", sorted(MOCKS))
async def test_each_mock_announces_how_to_log_in(name: str) -> None:
    app, facts = build(parse_args([name, "--port", str(free_port())]))
    assert (facts["mock"], facts["url"].startswith("http://127.0.0.1:")) == (name, True)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", int(facts["url"].rsplit(":", 1)[1])).start()
        async with aiohttp.ClientSession() as client:
            assert await log_in(name, facts, client) == 200
    finally:
        await runner.cleanup()


def test_the_mock_options_reach_the_mocks() -> None:
    _, facts = build(parse_args(["greenlake", "--issuer", "http://127.0.0.1:9004"]))
    assert facts["issuer"] == "http://127.0.0.1:9004"
    _, facts = build(parse_args(["hcp", "--expires-in", "18000"]))
    assert facts["expires_in"] == 18000
    _, facts = build(parse_args(["commvault", "--base-path", "/webconsole/api"]))
    assert facts["base_url"].endswith("/webconsole/api")


def test_an_unknown_mock_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exited:
        parse_args(["netapp"])
    assert exited.value.code == 2


async def test_the_runner_serves_as_a_process_and_announces_once_it_listens() -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "proxy.mocks", "greenlake", "--port", str(port),
        stdout=asyncio.subprocess.PIPE, env={k: v for k, v in os.environ.items() if k != "AIOHTTP_NO_EXTENSIONS"},
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=20)
        facts = json.loads(line)
        assert facts["url"] == f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as client:
            assert await log_in("greenlake", facts, client) == 200
    finally:
        process.terminate()
        await process.wait()
