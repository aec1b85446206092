"""The issuer's JWKS and metadata over real HTTP, and key rotations a running labgate picks up by itself."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt
import yaml

from proxy.cli import main
from proxy.config import load_config
from proxy.issuer.access_tokens import mint_access_token
from proxy.issuer.ring import KeyRing
from proxy.store.base import Store
from proxy.store.open import open_store
from tests.conftest import (
    GatewayStarter,
    RecordingUpstream,
    RunningGateway,
    free_port,
    write_config,
)
from tests.gateway.serving import get
from tests.issuer.issuing import PRIVATE_JWK_MEMBERS, grant
from tests.labgate_process import labgate_serving
from tests.redis_server import RedisServer

ISSUER = {"url": "https://labgate.lab.example", "key_refresh_interval": 1}
ISSUER_SOURCE = {"token_source": {"type": "issuer"}}


@contextlib.asynccontextmanager
async def token_endpoint(running: RunningGateway) -> AsyncIterator[tuple[Store, KeyRing]]:
    """What the token endpoint does on a replica of its own: sign with the ring's active key."""
    assert running.config.issuer is not None
    store = open_store(running.config.store)
    try:
        yield store, KeyRing(store, running.config.issuer)
    finally:
        await store.close()


async def mint(ring: KeyRing, **overrides: Any) -> str:
    return mint_access_token(await ring.signing_key(), ring.settings, grant(**overrides), now=time.time()).token


async def fetch(url: str, method: str = "GET") -> tuple[int, dict[str, str], Any]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, url) as response:
            body = await response.json(content_type=None) if method != "HEAD" else None
            return response.status, dict(response.headers), body


async def test_the_jwks_and_metadata_are_served(start_http1_gateway: GatewayStarter, upstream: RecordingUpstream) -> None:
    running = await start_http1_gateway(upstream.url, upstream=ISSUER_SOURCE, issuer=ISSUER)
    async with token_endpoint(running) as (_, ring):
        kid = (await ring.signing_key()).kid
    status, headers, jwks = await fetch(f"{running.url}/.well-known/jwks.json")
    assert status == 200 and headers["Content-Type"].startswith("application/json")
    assert headers["Cache-Control"] == "public, max-age=60"
    [key] = jwks["keys"]
    assert (key["kid"], key["alg"], key["kty"], key["crv"], key["use"]) == (kid, "ES256", "EC", "P-256", "sig")
    assert not set(PRIVATE_JWK_MEMBERS) & set(key)
    status, _, metadata = await fetch(f"{running.url}/.well-known/oauth-authorization-server")
    assert status == 200
    assert metadata["issuer"] == "https://labgate.lab.example"
    assert metadata["jwks_uri"] == "https://labgate.lab.example/.well-known/jwks.json"
    assert metadata["token_endpoint"] == "https://labgate.lab.example/oauth/token"
    assert (await fetch(f"{running.url}/.well-known/jwks.json", "HEAD"))[0] == 200
    assert not upstream.received  # labgate answers these itself


async def test_without_an_issuer_section_labgate_publishes_no_keys(
    start_http1_gateway: GatewayStarter, upstream: RecordingUpstream
) -> None:
    running = await start_http1_gateway(upstream.url)
    status, _, body = await fetch(f"{running.url}/.well-known/jwks.json")
    assert (status, body["reason"]) == (404, "no_upstream")


async def test_a_key_ring_that_cannot_be_read_is_503(start_http1_gateway: GatewayStarter, upstream: RecordingUpstream) -> None:
    running = await start_http1_gateway(
        upstream.url, upstream=ISSUER_SOURCE, issuer=ISSUER, store={"type": "redis", "url": f"redis://127.0.0.1:{free_port()}/0"}
    )
    status, headers, body = await fetch(f"{running.url}/.well-known/jwks.json")
    assert (status, body["reason"], body["error"]) == (503, "keys_unavailable", "temporarily_unavailable")
    assert headers["Cache-Control"] == "no-store"


async def test_labgates_own_tokens_reach_the_appliance_and_others_do_not(
    start_http1_gateway: GatewayStarter, upstream: RecordingUpstream
) -> None:
    running = await start_http1_gateway(upstream.url, upstream=ISSUER_SOURCE, issuer=ISSUER)
    async with token_endpoint(running) as (_, ring):
        token = await mint(ring)
        wrong_audience = await mint(ring, audience="another-upstream")
        narrowed = await mint(ring, token_type="admin", path_prefixes=("/api/hosts",))
    assert (await get(f"{running.url}/demo/api/hosts", token))[0] == 200
    status, body = await get(f"{running.url}/demo/api/hosts", wrong_audience)
    assert (status, body["reason"]) == (401, "wrong_audience")
    assert (await get(f"{running.url}/demo/api/backups", narrowed))[1]["reason"] == "prefix_not_allowed"  # its own list
    assert len(upstream.received) == 1


async def wait_for(condition: Any, *, seconds: float = 5.0) -> None:
    """Poll a real server until ``condition()`` holds; bounded."""
    deadline = time.monotonic() + seconds
    while not await condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.1)


async def test_a_cli_rotation_is_picked_up_by_the_running_gateway(
    start_http1_gateway: GatewayStarter, upstream: RecordingUpstream
) -> None:
    running = await start_http1_gateway(upstream.url, upstream=ISSUER_SOURCE, issuer=ISSUER)
    async with token_endpoint(running) as (_, ring):
        old_token = await mint(ring)
        old_kid = (await ring.signing_key()).kid
    assert (await get(f"{running.url}/demo/api/hosts", old_token))[0] == 200
    rotate = ["keys", "rotate", "--config", str(running.config.file)]
    assert await asyncio.to_thread(main, rotate) == 0  # another process, as far as the gateway knows

    async def two_keys_published() -> bool:
        return len((await fetch(f"{running.url}/.well-known/jwks.json"))[2]["keys"]) == 2

    await wait_for(two_keys_published)
    async with token_endpoint(running) as (_, ring):
        new_token = await mint(ring)
        assert (await ring.signing_key()).kid != old_kid
    assert (await get(f"{running.url}/demo/api/hosts", new_token))[0] == 200
    assert (await get(f"{running.url}/demo/api/hosts", old_token))[0] == 200  # the retired key still verifies

    assert await asyncio.to_thread(main, [*rotate, "--drop-old"]) == 0  # the keys leaked: drop them

    async def old_tokens_refused() -> bool:
        status, body = await get(f"{running.url}/demo/api/hosts", new_token)
        return status == 401 and body["reason"] == "unknown_key"

    await wait_for(old_tokens_refused)  # within two refresh intervals


async def test_replicas_on_redis_see_a_rotation_made_anywhere(
    upstream: RecordingUpstream, redis_server: RedisServer, tmp_path: Path
) -> None:
    config = write_config(
        tmp_path, upstream.url, upstream=ISSUER_SOURCE, issuer=ISSUER,
        store={"type": "redis", "url": redis_server.url, "prefix": f"keys-{uuid.uuid4().hex}:"},
    )
    assert await asyncio.to_thread(main, ["keys", "init", "--config", str(config)]) == 0
    async with contextlib.AsyncExitStack() as stack:
        urls = []
        for index in range(2):
            document = yaml.safe_load(config.read_text())
            document["listen"]["port"] = free_port()
            replica = tmp_path / f"replica{index}.yaml"
            replica.write_text(yaml.safe_dump(document))
            url, _ = await stack.enter_async_context(labgate_serving(replica))
            urls.append(url)
        before = [[k["kid"] for k in (await fetch(f"{url}/.well-known/jwks.json"))[2]["keys"]] for url in urls]
        assert before[0] == before[1] and len(before[0]) == 1
        assert await asyncio.to_thread(main, ["keys", "rotate", "--config", str(config)]) == 0

        async def both_publish_the_new_key() -> bool:
            found = [[k["kid"] for k in (await fetch(f"{url}/.well-known/jwks.json"))[2]["keys"]] for url in urls]
            return all(len(kids) == 2 and kids[0] == before[0][0] for kids in found)

        await wait_for(both_publish_the_new_key)
        loaded = load_config(config)
        assert loaded.issuer is not None
        store = open_store(loaded.store)
        try:
            token = await mint(KeyRing(store, loaded.issuer))
            assert jwt.get_unverified_header(token)["kid"] != before[0][0]  # signed with the rotated-in key
        finally:
            await store.close()
        for url in urls:
            assert (await get(f"{url}/demo/api/hosts", token))[0] == 200
