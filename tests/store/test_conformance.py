"""One conformance suite, run unchanged against every store backend."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from proxy.metrics import GatewayMetrics
from proxy.store.base import SigningKeyRecord, Store, StoreUnavailable, TokenRecord, TokenUse
from proxy.store.instrumented import InstrumentedStore
from proxy.store.memory import MemoryStore
from proxy.store.redis import RedisStore
from proxy.store.sqlite import SqliteStore
from tests.redis_server import RedisServer


@pytest.fixture(params=["memory", "sqlite", "redis", "instrumented"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    backend: Store
    if request.param == "memory":
        backend = MemoryStore()
    elif request.param == "instrumented":
        backend = InstrumentedStore(MemoryStore(), GatewayMetrics())  # the wrapper the gateway uses, around any backend
    elif request.param == "sqlite":
        backend = SqliteStore(tmp_path / "labgate.db")
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        backend = RedisStore(server.url, prefix=f"test-{uuid.uuid4().hex}:")  # tests never see each other's keys
    yield backend
    await backend.close()


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


# -- labgate's own signing keys (the issuer token source) ----------------------


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


# -- records: the token service's state (subjects, clients, refresh tokens) ----


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


# -- rate limits (GCRA, proxy/store/gcra.py) ------------------------------------------

from proxy.store.gcra import RateCheck  # noqa: E402 - grouped with the tests that use it


def per_minute(key: str, requests: int) -> RateCheck:
    return RateCheck(key, 60.0 / requests, requests)


async def test_a_rate_limit_lets_its_whole_budget_go_then_refuses(store: Store) -> None:
    now = time.time()
    check = per_minute("rl-burst", 3)
    answers = [await store.rate_limit([check], now) for _ in range(4)]
    assert [a.allowed for a in answers] == [True, True, True, False]
    assert [a.states[0].remaining for a in answers] == [2, 1, 0, 0]
    assert answers[3].retry_after == pytest.approx(20.0)  # one request every 20 s
    assert answers[3].states[0].reset == pytest.approx(60.0)


async def test_a_rate_limit_refills_one_request_per_interval(store: Store) -> None:
    now = time.time()
    check = per_minute("rl-refill", 3)
    for _ in range(3):
        assert (await store.rate_limit([check], now)).allowed
    assert not (await store.rate_limit([check], now + 19.9)).allowed
    refilled = await store.rate_limit([check], now + 20.0)
    assert refilled.allowed and refilled.states[0].remaining == 0
    after_quiet = await store.rate_limit([check], now + 20.0 + 60.0)
    assert after_quiet.allowed and after_quiet.states[0].remaining == 2


async def test_a_refused_request_spends_no_budget(store: Store) -> None:
    now = time.time()
    check = per_minute("rl-unspent", 1)
    assert (await store.rate_limit([check], now)).allowed
    for second in range(1, 59):
        assert not (await store.rate_limit([check], now + second)).allowed
    assert (await store.rate_limit([check], now + 60.0)).allowed  # the refusals did not push it back


async def test_several_limits_spend_all_or_nothing(store: Store) -> None:
    now = time.time()
    narrow, wide = per_minute("rl-narrow", 1), per_minute("rl-wide", 10)
    assert (await store.rate_limit([wide, narrow], now)).allowed
    refused = await store.rate_limit([wide, narrow], now)
    assert not refused.allowed
    assert [s.remaining for s in refused.states] == [9, 0]  # the wide budget was not spent by the refusal
    alone = await store.rate_limit([wide], now)
    assert alone.allowed and alone.states[0].remaining == 8


async def test_rate_limit_keys_are_independent(store: Store) -> None:
    now = time.time()
    assert (await store.rate_limit([per_minute("rl-a", 1)], now)).allowed
    assert (await store.rate_limit([per_minute("rl-b", 1)], now)).allowed
    assert not (await store.rate_limit([per_minute("rl-a", 1)], now)).allowed


async def test_concurrent_rate_limit_checks_never_overspend(store: Store) -> None:
    now = time.time()
    check = per_minute("rl-race", 5)
    answers = await asyncio.gather(*(store.rate_limit([check], now) for _ in range(20)))
    assert sum(a.allowed for a in answers) == 5


# -- reservations: up to N units of one budget at once (GCRA for N requests) ---------


async def test_a_reservation_takes_up_to_the_units_asked_for_and_spends_them_from_the_budget(store: Store) -> None:
    now = time.time()
    check = per_minute("rl-reserve", 10)  # one every 6 s
    first = await store.reserve_rate(check, 4, now)
    assert (first.granted, first.remaining) == (4, 6)
    assert first.reset == pytest.approx(24.0) and first.retry_after == 0.0
    second = await store.reserve_rate(check, 8, now)
    assert (second.granted, second.remaining) == (6, 0)  # the largest number that still conforms
    refused = await store.reserve_rate(check, 4, now)
    assert refused.granted == 0 and refused.retry_after == pytest.approx(6.0)
    assert not (await store.rate_limit([check], now)).allowed  # exact checks see the reserved units spent


async def test_a_refused_reservation_writes_nothing_and_the_budget_refills_by_interval(store: Store) -> None:
    now = time.time()
    check = per_minute("rl-reserve-refill", 3)  # one every 20 s
    assert (await store.reserve_rate(check, 3, now)).granted == 3
    for second in (1, 10, 19):
        assert (await store.reserve_rate(check, 3, now + second)).granted == 0
    refilled = await store.reserve_rate(check, 3, now + 40.0)
    assert (refilled.granted, refilled.remaining) == (2, 0)


async def test_concurrent_reservations_never_grant_more_than_the_budget(store: Store) -> None:
    now = time.time()
    check = per_minute("rl-reserve-race", 25)
    grants = await asyncio.gather(*(store.reserve_rate(check, 4, now) for _ in range(10)))
    assert sum(g.granted for g in grants) == 25
    assert sorted(g.granted for g in grants) == [0, 0, 0, 1, 4, 4, 4, 4, 4, 4]
