"""The token endpoint on its own, over loopback HTTP, with a clock the test moves and replicas on every backend."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlencode

import aiohttp
from aiohttp import web

from proxy.config import Config, load_config
from proxy.gateway.token_service.token_endpoint import TokenEndpoint
from proxy.issuer import directory
from proxy.issuer.ring import KeyRing
from proxy.store.base import Store
from proxy.tokens.state import TokenStateGuard
from tests.clock import Clock
from tests.conftest import app_on_loopback, write_config
from tests.gateway.token_service import ISSUER_SOURCE, LAB_PACK, issuer_section
from tests.issuer.issuing import Backend

DAY = 86400.0
PASSWORD = "alice's password"


def lab_config(tmp_path: Path) -> Config:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "lab.yaml").write_text(LAB_PACK)
    return load_config(
        write_config(tmp_path, "http://127.0.0.1:9", upstream={"pack": "lab", "token_source": ISSUER_SOURCE}, issuer=issuer_section())
    )


@contextlib.asynccontextmanager
async def serving(config: Config, store: Store, clock: Clock) -> AsyncIterator[str]:
    """One replica's token endpoint on a loopback port; yields its URL."""
    assert config.issuer is not None
    ring = KeyRing(store, config.issuer, clock=clock)
    endpoint = TokenEndpoint(config, store, ring, TokenStateGuard(store, clock=clock), clock=clock)

    async def handle(request: web.Request) -> web.StreamResponse:
        return (await endpoint.handle(request, "test-request"))[0]

    app = web.Application()
    app.router.add_route("*", "/oauth/token", handle)
    async with app_on_loopback(app) as url:
        yield f"{url}/oauth/token"
    await ring.close()


async def post(url: str, form: dict[str, str]) -> tuple[int, dict[str, str]]:
    async with aiohttp.ClientSession() as session:
        async with session.post(url, data=urlencode(form), headers={"Content-Type": "application/x-www-form-urlencoded"}) as answer:
            return answer.status, await answer.json()


async def login(url: str) -> dict[str, str]:
    status, body = await post(url, {"grant_type": "password", "username": "alice", "password": PASSWORD})
    assert status == 200, body
    return body


async def renew(url: str, refresh_token: str) -> tuple[int, dict[str, str]]:
    return await post(url, {"grant_type": "refresh_token", "refresh_token": refresh_token})


async def test_renewal_stops_at_renew_until_counted_from_the_chain_start(tmp_path: Path, backend: Backend) -> None:
    clock = Clock()
    store = backend.open()
    config = lab_config(tmp_path)
    try:
        await directory.add_subject(store, "alice", PASSWORD, now=clock())
        async with serving(config, store, clock) as url:
            body = await login(url)  # the operator type: refresh_until 1d
            clock.advance(DAY / 2)
            status, body = await renew(url, body["refresh_token"])
            assert status == 200  # renewing does not move renew-until
            clock.advance(DAY / 2 - 1)
            status, body = await renew(url, body["refresh_token"])
            assert status == 200  # one second before the end
            clock.advance(1)
            status, refused = await renew(url, body["refresh_token"])
            assert (status, refused["error"], refused["reason"]) == (400, "invalid_grant", "renewal_ended")
            clock.advance(2 * DAY)  # long after: the store has forgotten the token
            status, refused = await renew(url, body["refresh_token"])
            assert (status, refused["error"], refused["reason"]) == (400, "invalid_grant", "invalid_grant")
    finally:
        await store.close()


async def test_two_replicas_renewing_one_refresh_token_at_once_never_both_succeed(tmp_path: Path, backend: Backend) -> None:
    """The same refresh token twice at the same moment is a replay: one may win the take, then the chain is revoked."""
    clock = Clock()
    config = lab_config(tmp_path)
    stores = [backend.open(), backend.open()]
    try:
        await directory.add_subject(stores[0], "alice", PASSWORD, now=clock())
        async with serving(config, stores[0], clock) as first, serving(config, stores[1], clock) as second:
            for _ in range(3):
                body = await login(first)
                results = await asyncio.gather(renew(first, body["refresh_token"]), renew(second, body["refresh_token"]))
                assert sorted(status for status, _ in results) == [200, 400], results
                [winner] = [answer for status, answer in results if status == 200]
                [loser] = [answer for status, answer in results if status == 400]
                assert loser["reason"] == "refresh_token_reused"
                status, refused = await renew(first, winner["refresh_token"])  # the chain is revoked
                assert (status, refused["error"]) == (400, "invalid_grant")
    finally:
        for store in stores:
            await store.close()
