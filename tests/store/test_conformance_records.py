"""The store conformance suite, every backend: records, the token service's state (subjects, clients, refresh tokens)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from proxy.store.base import Store
from proxy.store.redis import RedisStore
from proxy.store.sqlite import SqliteStore
from tests.redis_server import RedisServer


async def test_a_record_is_stored_read_and_deleted(store: Store) -> None:
    now = time.time()
    assert await store.get_record("subject", "alice", now) is None
    await store.put_record("subject", "alice", '{"name":"alice"}')
    assert await store.get_record("subject", "alice", now) == '{"name":"alice"}'
    assert await store.delete_record("subject", "alice") is True
    assert await store.delete_record("subject", "alice") is False
    assert await store.get_record("subject", "alice", now) is None


async def test_putting_a_record_again_replaces_it_and_its_expiry(store: Store) -> None:
    now = time.time()
    await store.put_record("client", "c1", '{"v":1}', expires_at=now + 5)
    await store.put_record("client", "c1", '{"v":2}')
    assert await store.get_record("client", "c1", now + 10) == '{"v":2}'
    assert await store.list_records("client", now + 10) == [("c1", '{"v":2}')]


async def test_a_record_past_its_expiry_is_unknown_everywhere(store: Store) -> None:
    now = time.time()
    await store.put_record("refresh", "h1", '{"chain":"a"}', expires_at=now + 5)
    assert await store.get_record("refresh", "h1", now + 4.5) == '{"chain":"a"}'
    assert await store.get_record("refresh", "h1", now + 5) is None
    assert await store.list_records("refresh", now + 5) == []
    assert await store.take_record("refresh", "h1", now + 5) is None


async def test_records_are_listed_by_kind_sorted_by_key(store: Store) -> None:
    now = time.time()
    for name in ("carol", "alice", "bob"):
        await store.put_record("subject", name, f'{{"name":"{name}"}}')
    await store.put_record("subject", "dave", '{"name":"dave"}', expires_at=now + 1)
    await store.put_record("client", "alice", '{"client_id":"alice"}')  # same key, another kind
    assert await store.list_records("subject", now) == [
        ("alice", '{"name":"alice"}'), ("bob", '{"name":"bob"}'), ("carol", '{"name":"carol"}'), ("dave", '{"name":"dave"}'),
    ]
    assert await store.list_records("client", now) == [("alice", '{"client_id":"alice"}')]
    assert await store.list_records("nothing-here", now) == []
    await store.delete_record("subject", "bob")
    assert [key for key, _ in await store.list_records("subject", now)] == ["alice", "carol", "dave"]
    assert [key for key, _ in await store.list_records("subject", now + 1)] == ["alice", "carol"]


async def test_kinds_of_record_do_not_mix(store: Store) -> None:
    now = time.time()
    await store.put_record("refresh", "h", "a")
    await store.put_record("refresh-spent", "h", "b")
    assert await store.get_record("refresh", "h", now) == "a"
    assert await store.take_record("refresh-spent", "h", now) == "b"
    assert await store.get_record("refresh", "h", now) == "a"


async def test_keys_and_values_are_any_text(store: Store) -> None:
    now = time.time()
    key, value = "a:b|c d/é\u00df", '{"note":"x|y:z \\u00e9"}'
    await store.put_record("subject", key, value)
    assert await store.get_record("subject", key, now) == value
    assert await store.list_records("subject", now) == [(key, value)]
    assert await store.take_record("subject", key, now) == value


async def test_taking_a_record_reads_and_deletes_it(store: Store) -> None:
    now = time.time()
    await store.put_record("refresh", "h", '{"chain":"c"}', expires_at=now + 60)
    assert await store.take_record("refresh", "h", now) == '{"chain":"c"}'
    assert await store.take_record("refresh", "h", now) is None
    assert await store.get_record("refresh", "h", now) is None
    assert await store.list_records("refresh", now) == []


def other_client(store: Store) -> Store:
    """Another connection to the same backend, as a second replica has."""
    if isinstance(store, SqliteStore):
        return SqliteStore(store.path)
    if isinstance(store, RedisStore):
        return RedisStore(store.target, prefix=store.prefix)
    return store


async def test_many_replicas_taking_one_record_leave_exactly_one_winner(store: Store) -> None:
    """Refresh-token rotation rests on this: a refresh token is used once, however many replicas race."""
    others = [other_client(store) for _ in range(3)]
    try:
        now = time.time()
        for round_ in range(5):
            await store.put_record("refresh", f"h{round_}", f"value {round_}", expires_at=now + 60)
            takers = [store, *others] * 4
            results = await asyncio.gather(*(taker.take_record("refresh", f"h{round_}", now) for taker in takers))
            assert [result for result in results if result is not None] == [f"value {round_}"]
    finally:
        for other in others:
            if other is not store:
                await other.close()


async def test_sqlite_keeps_records_across_a_restart_and_sweeps_expired_ones(tmp_path: Path) -> None:
    now = time.time()
    first = SqliteStore(tmp_path / "labgate.db")
    await first.put_record("subject", "alice", "kept")
    await first.put_record("refresh", "h", "short", expires_at=now + 5)
    await first.close()
    second = SqliteStore(tmp_path / "labgate.db")
    try:
        assert await second.get_record("subject", "alice", now) == "kept"
        assert await second.forget_expired(now + 5) == 1
        assert await second.list_records("refresh", 0) == []
    finally:
        await second.close()


async def test_redis_keeps_no_index_entries_for_records_long_expired(redis_server: RedisServer) -> None:
    """Kinds never listed (refresh tokens) must not grow the per-kind index without bound."""
    store = RedisStore(redis_server.url, prefix=f"test-{uuid.uuid4().hex}:")
    try:
        now = time.time()
        await store.put_record("refresh", "old", "x", expires_at=now - 10)
        await store.put_record("refresh", "new", "y", expires_at=now + 600)
        members = await store._client.zrange(store._key("records", "refresh"), 0, -1)
        assert members == [b"new"]
        assert await store.list_records("refresh", now) == [("new", "y")]
    finally:
        await store.close()


async def test_adding_a_record_writes_it_only_when_absent(store: Store) -> None:
    now = time.time()
    assert await store.add_record("subject", "alice", "first", now) is True
    assert await store.add_record("subject", "alice", "second", now) is False
    assert await store.get_record("subject", "alice", now) == "first"
    assert await store.list_records("subject", now) == [("alice", "first")]


async def test_adding_over_an_expired_record_replaces_it(store: Store) -> None:
    now = time.time()
    await store.put_record("emergency-client", "c1", "old", expires_at=now + 5)
    assert await store.add_record("emergency-client", "c1", "new", now + 1) is False
    assert await store.add_record("emergency-client", "c1", "new", now + 5, expires_at=now + 60) is True
    assert await store.get_record("emergency-client", "c1", now + 6) == "new"
    assert await store.list_records("emergency-client", now + 6) == [("c1", "new")]


async def test_many_replicas_adding_one_record_leave_exactly_one_winner(store: Store) -> None:
    """Creating a subject or client rests on this: two simultaneous creates give one success."""
    others = [other_client(store) for _ in range(3)]
    try:
        now = time.time()
        for round_ in range(5):
            adders = [store, *others] * 4
            results = await asyncio.gather(
                *(adder.add_record("subject", f"s{round_}", f"by {n}", now) for n, adder in enumerate(adders))
            )
            assert results.count(True) == 1
            winner = results.index(True)
            assert await store.get_record("subject", f"s{round_}", now) == f"by {winner}"
    finally:
        for other in others:
            if other is not store:
                await other.close()
