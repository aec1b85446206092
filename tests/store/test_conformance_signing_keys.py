"""The store conformance suite, every backend: labgate's own signing keys (the issuer token source)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from proxy.store.base import SigningKeyRecord, Store
from proxy.store.redis import RedisStore
from proxy.store.sqlite import SqliteStore


def signing_key(kid: str, created_at: float) -> SigningKeyRecord:
    """Stores never parse key material: any text stands in for the PEMs here."""
    return SigningKeyRecord(kid, "ES256", created_at, f"public of {kid}", f"private of {kid}")


async def test_the_first_signing_key_is_added_once(store: Store) -> None:
    now = time.time()
    assert await store.signing_keys(now) == []
    assert await store.add_first_signing_key(signing_key("a", now)) is True
    assert await store.add_first_signing_key(signing_key("b", now + 1)) is False  # one is active: nothing written
    assert await store.signing_keys(now) == [signing_key("a", now)]


async def test_rotation_retires_the_active_key_and_keeps_it_until_usable_until(store: Store) -> None:
    now = time.time()
    await store.add_first_signing_key(signing_key("a", now))
    await store.rotate_signing_key(signing_key("b", now + 10), usable_until=now + 3610)
    keys = await store.signing_keys(now + 10)
    assert [(k.kid, k.active) for k in keys] == [("a", False), ("b", True)]  # oldest first
    assert (keys[0].retired_at, keys[0].usable_until) == (now + 10, now + 3610)  # exactly as written
    assert keys[1] == signing_key("b", now + 10)
    assert [k.kid for k in await store.signing_keys(now + 3610)] == ["b"]  # past usable_until: gone


async def test_rotating_again_keeps_earlier_retirements_and_forgets_what_ran_out(store: Store) -> None:
    now = time.time()
    await store.add_first_signing_key(signing_key("a", now))
    await store.rotate_signing_key(signing_key("b", now + 10), usable_until=now + 100)
    await store.rotate_signing_key(signing_key("c", now + 50), usable_until=now + 200)
    keys = {k.kid: k for k in await store.signing_keys(now + 50)}
    assert (keys["a"].retired_at, keys["a"].usable_until) == (now + 10, now + 100)  # not retired twice
    assert (keys["b"].retired_at, keys["b"].usable_until) == (now + 50, now + 200)
    assert keys["c"].active
    await store.rotate_signing_key(signing_key("d", now + 150), usable_until=now + 300)
    assert [k.kid for k in await store.signing_keys(0)] == ["b", "c", "d"]  # a was forgotten, not just hidden


async def test_a_rotation_with_no_grace_forgets_the_old_key_at_once(store: Store) -> None:
    now = time.time()
    await store.add_first_signing_key(signing_key("leaked", now))
    await store.rotate_signing_key(signing_key("fresh", now + 5), usable_until=now + 5)
    assert [k.kid for k in await store.signing_keys(0)] == ["fresh"]


async def test_no_active_key_left_after_rotation_lets_a_first_key_in_only_if_none_is_active(store: Store) -> None:
    now = time.time()
    await store.rotate_signing_key(signing_key("a", now), usable_until=now + 60)  # rotating an empty ring makes one
    assert [k.kid for k in await store.signing_keys(now)] == ["a"]
    assert await store.add_first_signing_key(signing_key("b", now + 1)) is False


async def test_replicas_starting_together_make_one_first_key(store: Store) -> None:
    """Two clients of the same backend race to add the first key: exactly one wins."""
    other: Store = store
    if isinstance(store, SqliteStore):
        other = SqliteStore(store.path)
    elif isinstance(store, RedisStore):
        other = RedisStore(store.target, prefix=store.prefix)  # the same keys, another connection
    try:
        now = time.time()
        results = await asyncio.gather(*(
            target.add_first_signing_key(signing_key(f"k{index}", now + index))
            for index, target in enumerate([store, other, store, other])
        ))
        assert sorted(results) == [False, False, False, True]
        assert len(await other.signing_keys(now)) == 1
    finally:
        if other is not store:
            await other.close()


async def test_sqlite_keeps_signing_keys_across_a_restart(tmp_path: Path) -> None:
    now = time.time()
    first = SqliteStore(tmp_path / "labgate.db")
    await first.add_first_signing_key(signing_key("a", now))
    await first.rotate_signing_key(signing_key("b", now + 1), usable_until=now + 600)
    before = await first.signing_keys(now + 1)
    await first.close()
    second = SqliteStore(tmp_path / "labgate.db")
    try:
        assert await second.signing_keys(now + 1) == before
        assert await second.forget_expired(now + 600) == 1  # the sweep forgets the retired key too
        assert [k.kid for k in await second.signing_keys(0)] == ["b"]
    finally:
        await second.close()
