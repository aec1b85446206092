"""ttl, idle and absolute lifetimes, with an injected clock and no sleeps."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from proxy.policy.model import Lifetimes
from proxy.reasons import Reason
from proxy.store.base import RevocationKind, StoreUnavailable
from proxy.store.memory import MemoryStore
from proxy.token_facts import TokenFacts, TokenRejection
from proxy.tokens.state import TokenStateGuard
from tests.clock import Clock

ISSUED = 1_000_000.0
SIMPLIVITY = Lifetimes(idle=600, absolute=86_400)


class CountingStore(MemoryStore):
    """A memory store that counts writes of last use, and can be switched off."""

    def __init__(self) -> None:
        super().__init__()
        self.touches = 0
        self.down = False

    async def touch(self, key: str, at: float, until: float | None = None) -> None:
        if self.down:
            raise StoreUnavailable("down")
        self.touches += 1
        await super().touch(key, at, until)

    async def last_used(self, key: str) -> float | None:
        if self.down:
            raise StoreUnavailable("down")
        return await super().last_used(key)


def facts(issued: float | None = ISSUED) -> TokenFacts:
    return TokenFacts(token_type="emergency", token_hash="abc", issued_at=issued, expires_at=ISSUED + 10**6)


async def outcome(guard: TokenStateGuard, lifetimes: Lifetimes = SIMPLIVITY, key: str = "k") -> Reason:
    """Check a request, and record its use when it passes, as the gateway does once it forwarded it."""
    result = await guard.check(key, facts(), lifetimes)
    if result is None:
        await guard.record_use(key, facts(), lifetimes)
    return Reason.ALLOWED if result is None else result.reason


async def test_continuous_use_keeps_a_token_alive_until_its_absolute_lifetime() -> None:
    clock = Clock(ISSUED)
    guard = TokenStateGuard(CountingStore(), clock=clock)
    while clock.now < ISSUED + 86_400 - 300:
        assert await outcome(guard) is Reason.ALLOWED
        clock.now += 300  # every 5 minutes, well within the 10-minute idle timeout
    clock.now = ISSUED + 86_400
    assert await outcome(guard) is Reason.ABSOLUTE_EXPIRED


async def test_ten_minutes_without_use_kill_a_simplivity_token() -> None:
    clock = Clock(ISSUED)
    guard = TokenStateGuard(CountingStore(), clock=clock)
    clock.now += 599
    assert await outcome(guard) is Reason.ALLOWED
    clock.now += 600
    assert await outcome(guard) is Reason.IDLE_EXPIRED


async def test_a_token_never_used_idles_from_its_issue() -> None:
    clock = Clock(ISSUED + 601)
    assert await outcome(TokenStateGuard(CountingStore(), clock=clock)) is Reason.IDLE_EXPIRED


async def test_ttl() -> None:
    clock = Clock(ISSUED + 1799)
    guard = TokenStateGuard(CountingStore(), clock=clock)
    assert await outcome(guard, Lifetimes(ttl=1800)) is Reason.ALLOWED
    clock.now = ISSUED + 1800
    assert await outcome(guard, Lifetimes(ttl=1800)) is Reason.TTL_EXPIRED


async def test_uses_are_written_in_one_batch_per_interval_not_per_request() -> None:
    clock = Clock(ISSUED)
    store = CountingStore()
    guard = TokenStateGuard(store, clock=clock)
    for _ in range(100):  # 100 requests: none waits for a store write
        assert await outcome(guard) is Reason.ALLOWED
        clock.now += 0.0099
    assert store.touches == 0
    await guard.flush()  # what the 1 s timer does
    assert store.touches == 1 and await store.last_used("k") == clock.now - 0.0099  # the latest use
    await outcome(guard)
    await outcome(guard, key="other")
    await guard.flush()
    assert store.touches == 3


async def test_a_use_is_recorded_without_the_store_and_written_once_it_is_back() -> None:
    clock = Clock(ISSUED + 10)
    store = CountingStore()
    guard = TokenStateGuard(store, clock=clock)
    store.down = True
    assert await outcome(guard) is Reason.ALLOWED  # recent enough: the store need not be asked
    with pytest.raises(StoreUnavailable):
        await guard.flush()
    store.down = False
    await guard.flush()  # the batch that failed is written with the next one
    assert await store.last_used("k") == ISSUED + 10


async def test_uses_waiting_for_their_batch_are_written_at_shutdown() -> None:
    clock = Clock(ISSUED)
    store = CountingStore()
    guard = TokenStateGuard(store, clock=clock, write_interval=3600)
    for index in range(3):
        await outcome(guard, key=f"k{index}")
    assert store.touches == 0
    await guard.close()
    assert [await store.last_used(f"k{index}") for index in range(3)] == [ISSUED] * 3


async def test_a_use_through_another_replica_counts() -> None:
    clock = Clock(ISSUED)
    shared = CountingStore()
    first, second = TokenStateGuard(shared, clock=clock), TokenStateGuard(shared, clock=clock)
    clock.now += 500
    assert await outcome(first) is Reason.ALLOWED  # used on replica one ...
    await first.flush()
    clock.now += 500
    assert await outcome(second) is Reason.ALLOWED  # ... so replica two still accepts it
    await second.flush()
    clock.now += 601
    assert await outcome(first) is Reason.IDLE_EXPIRED


async def test_idle_expiry_is_exact_to_within_the_write_interval_and_never_late() -> None:
    clock = Clock(ISSUED)
    shared = CountingStore()
    first, second = TokenStateGuard(shared, clock=clock), TokenStateGuard(shared, clock=clock)
    await outcome(first)
    await first.flush()  # ISSUED is written
    clock.now += 0.5
    await outcome(first)  # waits for the next batch
    clock.now = ISSUED + 600.2  # 599.7 s after the last use, 600.2 s after the last write
    assert await outcome(second) is Reason.IDLE_EXPIRED  # early, within the 1 s batch interval
    await first.flush()
    assert await outcome(second) is Reason.ALLOWED  # the use at ISSUED + 0.5 is known now
    clock.now = ISSUED + 0.5 + 1200.0
    assert await outcome(first) is Reason.IDLE_EXPIRED


class CountingReads(CountingStore):
    """Also counts reads of last use."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def last_used(self, key: str) -> float | None:
        self.reads += 1
        return await super().last_used(key)


async def test_the_store_is_read_only_when_what_this_process_knows_says_idle() -> None:
    clock = Clock(ISSUED)
    store = CountingReads()
    guard = TokenStateGuard(store, clock=clock)
    for _ in range(10):
        clock.now += 300  # every five minutes: each use keeps it alive here
        assert await outcome(guard) is Reason.ALLOWED
    assert store.reads == 0
    other = TokenStateGuard(store, clock=clock)
    await guard.flush()
    clock.now += 500  # 500 s after the last use, 3,500 s after issue: the other replica must ask
    assert await outcome(other) is Reason.ALLOWED and store.reads == 1
    clock.now += 50
    assert await outcome(other) is Reason.ALLOWED and store.reads == 1  # what it learned, and its own use


async def test_a_token_without_issue_time_cannot_have_lifetimes() -> None:
    guard = TokenStateGuard(CountingStore(), clock=Clock(ISSUED))
    result = await guard.check("k", facts(issued=None), SIMPLIVITY)
    assert isinstance(result, TokenRejection) and result.reason is Reason.MISSING_CLAIM
    assert await guard.check("k", facts(issued=None), Lifetimes(refresh_until=90 * 86_400)) is None


async def test_an_unreachable_store_fails_closed() -> None:
    store = CountingStore()
    store.down = True
    clock = Clock(ISSUED + 700)  # idle by what this process knows: only the store can say otherwise
    assert await outcome(TokenStateGuard(store, clock=clock)) is Reason.STORE_UNAVAILABLE
    assert Reason.STORE_UNAVAILABLE.status == 503


async def test_types_without_lifetimes_never_touch_the_store() -> None:
    store = CountingStore()
    store.down = True
    assert await outcome(TokenStateGuard(store, clock=Clock(ISSUED)), Lifetimes()) is Reason.ALLOWED


@pytest.mark.parametrize("remembered", [1, 10])
async def test_memory_is_bounded(remembered: int) -> None:
    guard = TokenStateGuard(CountingStore(), clock=Clock(ISSUED), remembered=remembered)
    for index in range(100):
        await outcome(guard, key=f"k{index}")
    assert len(guard._uses._latest) <= remembered and guard._uses.waiting() <= remembered


def revocable(issued: float = ISSUED, **claims: str) -> TokenFacts:
    return TokenFacts(token_type="t", token_hash="abc", subject="alice", issued_at=issued, expires_at=ISSUED + 10**6, claims=claims)


async def revoked(guard: TokenStateGuard, facts: TokenFacts, key: str = "k") -> Reason:
    result = await guard.check_revoked(key, facts)
    return Reason.ALLOWED if result is None else result.reason


@pytest.mark.parametrize(
    "kind, value, claims",
    [("token", "k", {}), ("subject", "alice", {}), ("client", "app-1", {"client_id": "app-1"}), ("client", "app-2", {"azp": "app-2"})],
)
async def test_revocation_by_token_subject_and_client(kind: str, value: str, claims: dict[str, str]) -> None:
    clock = Clock(ISSUED + 10)
    store = CountingStore()
    guard = TokenStateGuard(store, clock=clock)
    assert await revoked(guard, revocable(**claims)) is Reason.ALLOWED
    await store.revoke(kind, value, ISSUED + 20)  # type: ignore[arg-type]
    clock.now += 1  # past the half-second answer cache
    assert await revoked(guard, revocable(**claims)) is Reason.REVOKED


async def test_tokens_issued_after_a_subject_revocation_live() -> None:
    clock = Clock(ISSUED + 100)
    store = CountingStore()
    await store.revoke("subject", "alice", ISSUED + 50)
    guard = TokenStateGuard(store, clock=clock)
    assert await revoked(guard, revocable(issued=ISSUED)) is Reason.REVOKED
    assert await revoked(guard, revocable(issued=ISSUED + 60), key="newer") is Reason.ALLOWED


async def test_revocation_answers_are_cached_for_half_a_second() -> None:
    clock = Clock(ISSUED + 10)
    store = CountingStore()
    guard = TokenStateGuard(store, clock=clock)
    assert await revoked(guard, revocable()) is Reason.ALLOWED
    await store.revoke("token", "k", ISSUED + 10)
    clock.now += 0.4
    assert await revoked(guard, revocable()) is Reason.ALLOWED  # still the cached answer
    clock.now += 0.2
    assert await revoked(guard, revocable()) is Reason.REVOKED  # within a second, as promised


async def test_revocation_checks_fail_closed() -> None:
    store = CountingStore()
    store.down = True

    async def unavailable(kind: str, value: str, now: float) -> float | None:
        raise StoreUnavailable("down")

    store.revoked_at = unavailable  # type: ignore[method-assign,assignment]
    assert await revoked(TokenStateGuard(store, clock=Clock(ISSUED)), revocable()) is Reason.STORE_UNAVAILABLE


def chained(chain: object, issued: float = ISSUED) -> TokenFacts:
    return TokenFacts(token_type="emergency", token_hash="abc", subject="alice", issued_at=issued, claims={"chain": chain})


async def test_revoking_a_refresh_chain_kills_every_token_minted_in_it_before() -> None:
    clock = Clock(ISSUED + 5)
    guard = TokenStateGuard(MemoryStore(), clock=clock)
    assert await guard.check_revoked("k", chained("c1")) is None
    await guard.revoke("chain", "c1", ISSUED + 5)  # this process sees it at once, cache or not
    rejection = await guard.check_revoked("k", chained("c1"))
    assert rejection is not None and rejection.reason is Reason.REVOKED and "chain" in rejection.detail
    assert await guard.check_revoked("k2", chained("c2")) is None  # another chain
    assert await guard.check_revoked("k3", chained("c1", issued=ISSUED + 6)) is None  # minted after
    assert await guard.check_revoked("k4", chained(["c1"])) is None  # not a chain id: nothing to look up


async def test_a_revocation_made_elsewhere_is_seen_once_the_cached_answer_is_stale() -> None:
    clock = Clock(ISSUED + 5)
    store = MemoryStore()
    guard = TokenStateGuard(store, clock=clock)
    assert await guard.check_revoked("k", chained("c1")) is None
    await store.revoke("chain", "c1", ISSUED + 5)  # another replica
    assert await guard.check_revoked("k", chained("c1")) is None  # cached "not revoked"
    clock.now += 0.5
    assert await guard.check_revoked("k", chained("c1")) is not None


async def test_a_check_alone_is_not_a_use() -> None:
    """Only a forwarded request is a use: checks of refused requests never extend a token's life."""
    clock = Clock(ISSUED)
    store = CountingStore()
    guard = TokenStateGuard(store, clock=clock)
    for _ in range(5):
        clock.now += 300
        assert await guard.check("k", facts(), SIMPLIVITY) is None or clock.now >= ISSUED + 600
    assert store.touches == 0
    assert (await guard.check("k", facts(), SIMPLIVITY)).reason is Reason.IDLE_EXPIRED  # type: ignore[union-attr]


def signed_facts(issued: float, expires: float) -> TokenFacts:
    return TokenFacts(
        token_type="emergency", token_hash="abc", issued_at=issued, expires_at=expires,
        claims={"iat": issued, "exp": expires},
    )


@pytest.mark.parametrize(
    "lifetimes, claimed, reason",
    [
        (SIMPLIVITY, 86_400, None),
        (SIMPLIVITY, 86_401, Reason.LIFETIME_TOO_LONG),  # longer than the absolute lifetime
        (Lifetimes(ttl=1800), 1800, None),
        (Lifetimes(ttl=1800), 3600, Reason.LIFETIME_TOO_LONG),  # ttl is the only lifetime
        (Lifetimes(ttl=1800, absolute=7200), 3600, None),  # the absolute lifetime is the bound
    ],
    ids=["absolute_exact", "absolute_exceeded", "ttl_exact", "ttl_exceeded", "ttl_below_absolute"],
)
async def test_a_token_claiming_a_longer_life_than_its_type_is_refused(
    lifetimes: Lifetimes, claimed: int, reason: Reason | None
) -> None:
    guard = TokenStateGuard(CountingStore(), clock=Clock(ISSUED + 1))
    result = await guard.check("k", signed_facts(ISSUED, ISSUED + claimed), lifetimes)
    assert (result.reason if result else None) is reason


class CountingRevocations(MemoryStore):
    """A memory store that counts revocation look-ups."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    async def revocations(self, items: Sequence[tuple[RevocationKind, str]], now: float) -> list[float | None]:
        self.lookups += 1
        return await super().revocations(items, now)


async def test_a_repeat_within_the_half_second_asks_the_store_nothing() -> None:
    clock = Clock(ISSUED + 10)
    store = CountingRevocations()
    guard = TokenStateGuard(store, clock=clock)
    for _ in range(5):
        assert await revoked(guard, revocable()) is Reason.ALLOWED
        clock.now += 0.09
    assert store.lookups == 1
    clock.now += 0.1  # 0.55 s after the answer
    assert await revoked(guard, revocable()) is Reason.ALLOWED
    assert store.lookups == 2


async def test_a_tokens_answer_is_never_staler_than_the_names_it_rests_on() -> None:
    """Token B checked 0.4 s after token A shares A's cached subject answer: it expires with that answer."""
    clock = Clock(ISSUED + 10)
    store = MemoryStore()
    guard = TokenStateGuard(store, clock=clock)
    assert await revoked(guard, revocable(), key="a") is Reason.ALLOWED
    clock.now += 0.3
    await store.revoke("subject", "alice", clock.now)  # another replica
    clock.now += 0.1
    assert await revoked(guard, revocable(), key="b") is Reason.ALLOWED  # the subject's answer from 0.4 s ago
    clock.now += 0.1  # 0.5 s after the subject's answer, 0.1 s after b's own check
    assert await revoked(guard, revocable(), key="b") is Reason.REVOKED
    assert await revoked(guard, revocable(), key="a") is Reason.REVOKED


async def test_a_revocation_here_ends_every_cached_answer_at_once() -> None:
    clock = Clock(ISSUED + 10)
    guard = TokenStateGuard(MemoryStore(), clock=clock)
    assert await revoked(guard, revocable(), key="a") is Reason.ALLOWED
    assert await revoked(guard, revocable(), key="b") is Reason.ALLOWED
    await guard.revoke("subject", "alice", clock.now)
    assert await revoked(guard, revocable(), key="a") is Reason.REVOKED
    assert await revoked(guard, revocable(), key="b") is Reason.REVOKED


async def test_cached_answers_per_token_are_bounded() -> None:
    guard = TokenStateGuard(MemoryStore(), clock=Clock(ISSUED + 10), remembered=3)
    for index in range(20):
        assert await revoked(guard, revocable(), key=f"k{index}") is Reason.ALLOWED
    assert len(guard._clear) <= 3
