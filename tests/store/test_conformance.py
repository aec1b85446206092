"""One conformance suite, run unchanged against every store backend: tokens, their uses, revocations."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from proxy.store.base import Store, StoreUnavailable, TokenRecord, TokenUse
from proxy.store.redis import RedisStore
from proxy.store.sqlite import SqliteStore
from tests.redis_server import RedisServer


def record(**overrides: object) -> TokenRecord:
    values: dict[str, object] = {
        "token_type": "emergency", "issued_at": time.time(), "expires_at": time.time() + 600,
        "upstream": "svt", "subject": "svtcli", "client_id": "simplivity", "refresh_hash": None,
    }
    values.update(overrides)
    return TokenRecord(**values)  # type: ignore[arg-type]


async def test_a_token_is_remembered_and_forgotten(store: Store) -> None:
    now = time.time()
    assert await store.get_token("k1", now) is None
    await store.put_token("k1", record())
    found = await store.get_token("k1", now)
    assert found is not None and (found.token_type, found.subject, found.client_id) == ("emergency", "svtcli", "simplivity")
    assert await store.drop_token("k1") is True
    assert await store.drop_token("k1") is False
    assert await store.get_token("k1", now) is None


async def test_a_token_past_its_expiry_is_unknown(store: Store) -> None:
    now = time.time()
    await store.put_token("short", record(expires_at=now + 5))
    assert await store.get_token("short", now) is not None
    assert await store.get_token("short", now + 5) is None


async def test_a_token_without_expiry_stays(store: Store) -> None:
    await store.put_token("forever", record(expires_at=None))
    assert await store.get_token("forever", time.time() + 10**6) is not None


async def test_putting_again_replaces(store: Store) -> None:
    await store.put_token("k", record(token_type="password"))
    await store.put_token("k", record(token_type="emergency"))
    found = await store.get_token("k", time.time())
    assert found is not None and found.token_type == "emergency"


async def test_last_use_only_moves_forward(store: Store) -> None:
    now = time.time()
    assert await store.last_used("k") is None
    await store.touch("k", now, until=now + 600)
    await store.touch("k", now - 30, until=now + 600)  # a late write from another replica
    assert await store.last_used("k") == pytest.approx(now)
    await store.touch("k", now + 1.5, until=now + 600)
    assert await store.last_used("k") == pytest.approx(now + 1.5)


async def test_a_batch_of_uses_is_written_whole_and_only_moves_forward(store: Store) -> None:
    now = time.time()
    await store.touch("a", now, until=now + 600)
    await store.touch_many([TokenUse("a", now - 30, now + 600), TokenUse("b", now, now + 600), TokenUse("c", now + 1, None)])
    await store.touch_many([])
    assert [await store.last_used(key) for key in "abc"] == pytest.approx([now, now, now + 1])


async def test_dropping_a_token_drops_its_uses(store: Store) -> None:
    now = time.time()
    await store.put_token("k", record())
    await store.touch("k", now, until=now + 600)
    await store.drop_token("k")
    assert await store.last_used("k") is None


@pytest.mark.parametrize("kind", ["token", "subject", "client", "chain"])
async def test_revocations_by_token_subject_and_client(store: Store, kind: str) -> None:
    now = time.time()
    assert await store.revoked_at(kind, "x", now) is None  # type: ignore[arg-type]
    await store.revoke(kind, "x", now, until=now + 600)  # type: ignore[arg-type]
    assert await store.revoked_at(kind, "x", now) == pytest.approx(now)  # type: ignore[arg-type]
    assert await store.revoked_at(kind, "y", now) is None  # type: ignore[arg-type]
    later = now + 10
    await store.revoke(kind, "x", later)  # type: ignore[arg-type]
    assert await store.revoked_at(kind, "x", now) == pytest.approx(later)  # type: ignore[arg-type]


async def test_revocations_answers_each_name_in_order_in_one_call(store: Store) -> None:
    now = time.time()
    await store.revoke("subject", "alice", now, until=now + 600)
    await store.revoke("token", "t1", now - 5)
    await store.revoke("client", "gone", now - 10, until=now - 1)
    names: list[tuple[Any, str]] = [("token", "t1"), ("subject", "bob"), ("subject", "alice"), ("client", "gone"), ("chain", "c")]
    answers = await store.revocations(names, now)
    assert answers == [pytest.approx(now - 5), None, pytest.approx(now), None, None]
    assert answers == [await store.revoked_at(kind, value, now) for kind, value in names]
    assert await store.revocations([], now) == []


async def test_kinds_of_revocation_do_not_mix(store: Store) -> None:
    now = time.time()
    await store.revoke("subject", "alice", now, until=now + 600)
    assert await store.revoked_at("client", "alice", now) is None
    assert await store.revoked_at("token", "alice", now) is None


async def test_a_revocation_is_forgotten_after_until(store: Store) -> None:
    now = time.time()
    await store.revoke("token", "gone", now - 10, until=now - 1)
    assert await store.revoked_at("token", "gone", now) is None


async def test_ping_answers(store: Store) -> None:
    await store.ping()


async def test_sqlite_store_survives_a_restart(tmp_path: Path) -> None:
    now = time.time()
    first = SqliteStore(tmp_path / "labgate.db")
    await first.put_token("k", record())
    await first.revoke("subject", "bob", now)
    await first.close()
    second = SqliteStore(tmp_path / "labgate.db")
    try:
        assert await second.get_token("k", now) is not None
        assert await second.revoked_at("subject", "bob", now) == pytest.approx(now)
    finally:
        await second.close()


async def test_sqlite_sweep_forgets_what_no_longer_matters(tmp_path: Path) -> None:
    now = time.time()
    store = SqliteStore(tmp_path / "labgate.db")
    try:
        await store.put_token("old", record(expires_at=now - 1))
        await store.put_token("new", record(expires_at=now + 60))
        await store.revoke("token", "old", now - 5, until=now - 1)
        assert await store.forget_expired(now) == 2
        assert await store.get_token("new", now) is not None
    finally:
        await store.close()


async def test_unreachable_stores_raise_store_unavailable(tmp_path: Path) -> None:
    with_no_folder = SqliteStore(tmp_path / "missing" / "labgate.db")
    with pytest.raises(StoreUnavailable):
        await with_no_folder.ping()
    await with_no_folder.close()
    nobody = RedisStore("redis://127.0.0.1:9/0", timeout=0.5)
    with pytest.raises(StoreUnavailable):
        await nobody.ping()
    with pytest.raises(StoreUnavailable):
        await nobody.get_token("k", time.time())
    await nobody.close()


async def test_redis_recovers_when_the_server_comes_back(redis_server: RedisServer) -> None:
    store = RedisStore(redis_server.url, prefix=f"test-{uuid.uuid4().hex}:", timeout=0.5)
    try:
        await store.put_token("k", record())
        redis_server.stop()
        with pytest.raises(StoreUnavailable):
            await store.ping()
        redis_server.start()
        await store.ping()  # no restart of labgate needed
        assert await store.get_token("k", time.time()) is None  # no persistence configured in the test server
    finally:
        await store.close()


def test_token_records_round_trip_through_json() -> None:
    original = record(refresh_hash="ab" * 32)
    assert TokenRecord.from_json(original.to_json()) == original


async def test_sqlite_writes_sweep_expired_rows_now_and_then(tmp_path: Path) -> None:
    now = time.time()
    store = SqliteStore(tmp_path / "labgate.db")
    try:
        await store.touch("first", now, until=now + 1)  # the first write sweeps (nothing yet)
        await store.touch("stale", now, until=now + 1)
        await store.touch("later", now + 30, until=now + 600)  # within the minute: no sweep
        assert await store.last_used("stale") is not None
        await store.touch("much-later", now + 61, until=now + 600)  # a minute on: swept
        assert await store.last_used("stale") is None and await store.last_used("later") is not None
    finally:
        await store.close()
