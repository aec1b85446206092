"""The key ring: kept in the store, shared by every process, rotated without restarts, read boundedly."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from proxy.issuer.keys import SigningKeyUnusable, new_signing_key
from proxy.issuer.ring import (
    RETRY_INTERVAL,
    KeyRing,
    ensure_signing_key,
    rotate_signing_key,
)
from proxy.metrics import GatewayMetrics
from proxy.store.instrumented import InstrumentedStore
from proxy.store.memory import MemoryStore
from proxy.store.redis import RedisStore
from proxy.store.sqlite import SqliteStore
from proxy.verification_keys import KeysUnavailable
from tests.clock import Clock
from tests.conftest import free_port
from tests.issuer.issuing import PASSPHRASE, Backend, issuer_settings
from tests.redis_server import RedisServer


async def test_keys_survive_reopening_the_store_and_are_shared_by_every_client(backend: Backend) -> None:
    settings = issuer_settings()
    first = backend.open()
    try:
        signing = await KeyRing(first, settings).signing_key()  # the first key is made on first need
    finally:
        await first.close()
    second = backend.open()  # a restart, another worker or another replica
    try:
        ring = KeyRing(second, settings)
        assert [k.kid for k in await ring.published()] == [signing.kid]
        assert (await ring.signing_key()).kid == signing.kid
        found = await ring.get(signing.kid, "ES256")
        assert found is not None and found.key.public_numbers() == signing.private_key.public_key().public_numbers()
    finally:
        await second.close()


async def test_a_rotation_elsewhere_signs_here_after_the_refresh_interval(backend: Backend) -> None:
    clock = Clock()
    settings = issuer_settings(key_refresh_interval=5.0)
    serving, cli = backend.open(), backend.open()
    try:
        ring = KeyRing(serving, settings, clock=clock)
        old = (await ring.signing_key()).kid
        clock.advance(1.0)
        new = (await rotate_signing_key(cli, settings, now=clock())).kid  # `labgate keys rotate`, another process
        clock.advance(3.9)
        assert (await ring.signing_key()).kid == old  # within the interval: the ring read 4.9 s ago stands
        clock.advance(0.1)
        assert (await ring.signing_key()).kid == new  # no restart needed
        assert [k.kid for k in await ring.published()] == [old, new]  # the old one still verifies
        assert await ring.get(old, "ES256") is not None
    finally:
        await serving.close()
        if cli is not serving:
            await cli.close()


async def test_an_unknown_kid_is_looked_up_at_once_but_at_most_once_a_second() -> None:
    clock = Clock()
    settings = issuer_settings(key_refresh_interval=60.0)
    metrics = GatewayMetrics()
    store = InstrumentedStore(MemoryStore(), metrics)

    def reads() -> float | None:
        return metrics.registry.get_sample_value(
            "labgate_store_operation_duration_seconds_count", {"operation": "signing_keys"}
        )

    ring = KeyRing(store, settings, clock=clock)
    await ring.signing_key()
    assert reads() == 3  # the empty first read, the check before making a key, the read after
    clock.advance(RETRY_INTERVAL)
    for _ in range(50):
        assert await ring.get("made-up", "ES256") is None
    assert reads() == 4  # fifty made-up kids, one read
    rotated = await rotate_signing_key(store, settings, now=clock())
    assert await ring.get(rotated.kid, "ES256") is None  # within the second: not read again
    assert reads() == 4
    clock.advance(RETRY_INTERVAL)
    assert await ring.get(rotated.kid, "ES256") is not None  # a kid rotated in elsewhere, found long before 60 s
    assert reads() == 5


async def test_retired_keys_verify_until_their_grace_ends_then_never(backend: Backend) -> None:
    clock = Clock()
    settings = issuer_settings(access_token_max_lifetime=600.0, key_refresh_interval=5.0, leeway=5.0)
    store = backend.open()
    try:
        ring = KeyRing(store, settings, clock=clock)
        old = (await ring.signing_key()).kid
        await rotate_signing_key(store, settings, now=clock())
        clock.advance(settings.retired_key_grace - 0.5)  # 610 s: the last token the old key signed is still alive
        assert await ring.get(old, "ES256") is not None
        clock.advance(0.5)
        assert await ring.get(old, "ES256") is None
        assert old not in [k.kid for k in await ring.published()]
        assert settings.retired_key_grace == 600 + 5 + 5
    finally:
        await store.close()


async def test_drop_old_forgets_a_leaked_key_at_the_next_read(backend: Backend) -> None:
    clock = Clock()
    settings = issuer_settings()
    serving, cli = backend.open(), backend.open()
    try:
        ring = KeyRing(serving, settings, clock=clock)
        leaked = (await ring.signing_key()).kid
        await rotate_signing_key(cli, settings, now=clock(), drop_old=True)
        clock.advance(settings.key_refresh_interval)
        assert await ring.get(leaked, "ES256") is None
        assert [k.kid for k in await ring.published()] == [(await ring.signing_key()).kid]
    finally:
        await serving.close()
        if cli is not serving:
            await cli.close()


async def test_a_key_verifies_only_with_its_own_algorithm_across_an_algorithm_change() -> None:
    store = MemoryStore()
    es256 = issuer_settings(algorithm="ES256")
    rs256 = issuer_settings(algorithm="RS256")
    first = await ensure_signing_key(store, es256, now=time.time())
    assert first is not None
    second = await rotate_signing_key(store, rs256, now=time.time())
    ring = KeyRing(store, rs256)
    assert (await ring.signing_key()).algorithm == "RS256"
    assert await ring.get(first.kid, "ES256") is not None  # old ES256 tokens still verify
    assert await ring.get(first.kid, "RS256") is None
    assert await ring.get(second.kid, "ES256") is None


async def test_replicas_starting_together_agree_on_one_first_key(backend: Backend) -> None:
    settings = issuer_settings()
    stores = [backend.open() for _ in range(3)]
    try:
        keys = await asyncio.gather(*(KeyRing(s, settings).signing_key() for s in stores))
        assert len({k.kid for k in keys}) == 1
        assert len(await stores[0].signing_keys(time.time())) == 1
    finally:
        for store in {id(s): s for s in stores}.values():
            await store.close()


async def test_a_sealed_key_signs_only_with_the_passphrase() -> None:
    store = MemoryStore()
    made = await KeyRing(store, issuer_settings(key_passphrase=PASSPHRASE)).signing_key()
    without = KeyRing(store, issuer_settings())
    with pytest.raises(SigningKeyUnusable):
        await without.signing_key()
    assert await without.get(made.kid, "ES256") is not None  # verification never needs it


async def test_a_store_never_read_is_keys_unavailable_and_a_store_lost_later_keeps_the_last_ring(tmp_path: Path) -> None:
    nobody = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    try:
        ring = KeyRing(nobody, issuer_settings())
        for call in (ring.published(), ring.get("kid", "ES256"), ring.signing_key()):
            with pytest.raises(KeysUnavailable):
                await call
    finally:
        await nobody.close()

    server = RedisServer(tmp_path)  # its own server: this test stops it
    server.start()
    store = RedisStore(server.url, timeout=0.5)
    clock = Clock()
    settings = issuer_settings()
    try:
        ring = KeyRing(store, settings, clock=clock)
        old = (await ring.signing_key()).kid
        clock.advance(1)
        kid = (await rotate_signing_key(store, settings, now=clock())).kid
        clock.advance(settings.key_refresh_interval)
        assert (await ring.signing_key()).kid == kid
        server.stop()
        clock.advance(60)  # well past the refresh interval: the read fails, the last good ring stays
        assert await ring.get(kid, "ES256") is not None
        assert await ring.get(old, "ES256") is not None
        assert (await ring.signing_key()).kid == kid
        # Usability is checked against the clock at every use: unread, the retired key still ends on time.
        clock.advance(settings.retired_key_grace)
        assert await ring.get(old, "ES256") is None
        assert await ring.get(kid, "ES256") is not None
    finally:
        server.stop()
        await store.close()


async def test_the_sqlite_file_it_creates_is_private(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "labgate.db")
    try:
        await KeyRing(store, issuer_settings()).signing_key()
    finally:
        await store.close()
    assert (tmp_path / "labgate.db").stat().st_mode & 0o077 == 0


async def test_with_a_passphrase_only_keys_sealed_with_it_are_trusted() -> None:
    """Whoever can write the store without knowing the passphrase cannot slip in a key of their own."""
    clock = Clock()
    settings = issuer_settings(key_passphrase=PASSPHRASE)
    store = MemoryStore()
    ring = KeyRing(store, settings, clock=clock)
    mine = (await ring.signing_key()).kid
    for passphrase in (None, b"another passphrase entirely"):
        clock.advance(settings.key_refresh_interval)
        planted = new_signing_key("ES256", now=clock(), passphrase=passphrase)
        await store.rotate_signing_key(planted, usable_until=clock() + 600)
        assert await ring.get(planted.kid, "ES256") is None
        assert planted.kid not in [k.kid for k in await ring.published()]
        with pytest.raises(KeysUnavailable):
            await ring.signing_key()  # the active key is not labgate's: nothing signs until a real rotation
    assert await ring.get(mine, "ES256") is not None  # retired, and still trusted
    clock.advance(settings.key_refresh_interval)
    fresh = await rotate_signing_key(store, settings, now=clock())
    assert (await ring.signing_key()).kid == fresh.kid
