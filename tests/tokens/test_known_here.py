"""Answers without an await: each one given only when the awaited check would give the same now.

A request whose token is cached, cleared by the revocation view and within
its lifetimes by what this process knows is decided synchronously; anything
else is "ask the awaited check", which still checks everything.
"""

from __future__ import annotations

from proxy.metrics import GatewayMetrics
from proxy.policy.model import Lifetimes
from proxy.reasons import Reason
from proxy.store.memory import MemoryStore
from proxy.token_facts import TokenFacts, TokenRejection, token_fingerprint
from proxy.tokens.jwt_source import JwtSource
from proxy.tokens.state import Pending, TokenStateGuard
from tests.clock import Clock
from tests.tokens.jwt_tokens import settings, token_for
from tests.tokens.keys import claims
from tests.tokens.test_state import ISSUED, SIMPLIVITY, CountingStore, facts, revocable


async def test_a_token_is_known_here_only_once_verified_and_only_until_its_exp() -> None:
    clock, lookups = Clock(), []
    source = JwtSource(settings(leeway=60.0), on_cache=lookups.append, clock=clock)
    token = token_for("HS256", claims(exp=int(clock.now) + 20))
    try:
        assert source.verify_here(token) is None and lookups == []  # not verified yet: nothing counted here
        verified = await source.verify(token)
        assert isinstance(verified, TokenFacts) and lookups == [False]
        assert source.verify_here(token) == verified and lookups == [False, True]
        clock.now += 21  # past exp (within the leeway): the awaited check decides again
        assert source.verify_here(token) is None and lookups == [False, True]
        await source.verify(token)  # verified in full again: a miss
        assert lookups == [False, True, False]
    finally:
        await source.close()


async def test_a_bad_token_is_never_known_here() -> None:
    source = JwtSource(settings(), on_cache=lambda _hit: None)
    bad = token_for("HS256", claims(role="nobody"))
    try:
        assert isinstance(await source.verify(bad), TokenRejection)
        assert source.verify_here(bad) is None  # rejections are not cached: checked in full every time
    finally:
        await source.close()


async def test_a_token_is_clear_here_only_after_its_names_were_checked_and_until_a_revocation() -> None:
    clock = Clock(ISSUED + 10)
    store = MemoryStore()
    guard = TokenStateGuard(store, clock=clock)
    token = revocable(client_id="ops-cli")
    assert not guard.clear_here("k")  # never checked: ask the store
    assert await guard.check_revoked("k", token) is None
    assert guard.clear_here("k")
    clock.now += 0.6  # the polled answers are stale: ask again
    assert not guard.clear_here("k")
    assert await guard.check_revoked("k", token) is None and guard.clear_here("k")
    await guard.revoke("client", "ops-cli", ISSUED + 10)  # any token may carry the name
    assert not guard.clear_here("k")
    refused = await guard.check_revoked("k", token)
    assert refused is not None and refused.reason is Reason.REVOKED
    assert not guard.clear_here("k")


async def test_lifetimes_are_known_here_unless_only_the_store_can_tell() -> None:
    clock = Clock(ISSUED + 60)
    guard = TokenStateGuard(CountingStore(), clock=clock)
    assert guard.check_here("k", facts(), SIMPLIVITY) is None  # within idle since issue
    assert guard.check_here("k", facts(), Lifetimes()) is None  # nothing enforced
    missing = guard.check_here("k", facts(issued=None), SIMPLIVITY)
    assert isinstance(missing, TokenRejection) and missing.reason is Reason.MISSING_CLAIM
    clock.now = ISSUED + 700  # idle by what this process knows: a use elsewhere may say otherwise
    assert guard.check_here("k", facts(), SIMPLIVITY) is Pending.STORE
    expired = await guard.check("k", facts(), SIMPLIVITY)  # the awaited check asks the store
    assert expired is not None and expired.reason is Reason.IDLE_EXPIRED
    clock.now = ISSUED + 86_400
    past = guard.check_here("k", facts(), SIMPLIVITY)
    assert isinstance(past, TokenRejection) and past.reason is Reason.ABSOLUTE_EXPIRED


async def test_a_fingerprint_taken_by_the_caller_finds_the_same_cached_token() -> None:
    lookups: list[bool] = []
    source = JwtSource(settings(), on_cache=lookups.append)
    token = token_for("HS256", claims())
    try:
        verified = await source.verify(token)
        assert source.verify_here(token, token_fingerprint(token)) == verified == source.verify_here(token)
        assert source.verify_here(token, token_fingerprint(token + "x")) is None  # what the fingerprint names is looked up
        assert lookups == [False, True, True]
    finally:
        await source.close()


def slow_answer(guard: TokenStateGuard, key: str, token: TokenFacts, lifetimes: Lifetimes) -> TokenRejection | None | Pending:
    """What known_here stands for: the revocation view's clearance, then check_here."""
    return guard.check_here(key, token, lifetimes) if guard.clear_here(key) else Pending.STORE


LIFETIMES = [
    Lifetimes(), SIMPLIVITY, Lifetimes(ttl=1800), Lifetimes(ttl=1800, idle=600), Lifetimes(absolute=3600),
    Lifetimes(ttl=7200, absolute=3600), Lifetimes(refresh_until=90 * 86_400),
]
TOKENS = [
    facts(), facts(issued=None), revocable(),
    TokenFacts(token_type="t", token_hash="abc", issued_at=ISSUED, expires_at=ISSUED + 10**6,
               claims={"iat": ISSUED, "exp": ISSUED + 100_000}),  # claims a longer life than several types allow
]


async def test_known_here_answers_what_clear_here_then_check_here_answer_at_every_moment() -> None:
    """One call for the common case, the same answer as the two checks it stands for, whatever came before."""
    clock = Clock(ISSUED)
    guard = TokenStateGuard(MemoryStore(), clock=clock)
    moments = [0, 1, 300, 599.9, 600, 900, 1799.9, 1800, 3599.9, 3600, 7200, 86_399.9, 86_400, 10**6]
    for index, token in enumerate(TOKENS):
        for lifetimes in LIFETIMES:
            key = f"k{index}-{lifetimes}"
            clock.now = ISSUED
            assert guard.known_here(key, token, lifetimes) is Pending.STORE  # never cleared: ask the view
            for moment in moments:
                clock.now = ISSUED + moment
                if not guard.clear_here(key):
                    await guard.check_revoked(key, token)
                known = guard.known_here(key, token, lifetimes)
                assert known == slow_answer(guard, key, token, lifetimes), (index, lifetimes, moment)
                if known is None and moment in (300, 1799.9):
                    await guard.record_use(key, token, lifetimes)  # a forwarded request: a use


async def test_known_here_follows_a_new_type_definition_and_new_facts_at_once() -> None:
    clock = Clock(ISSUED + 100)
    guard = TokenStateGuard(MemoryStore(), clock=clock)
    token = facts()
    assert await guard.check_revoked("k", token) is None
    assert guard.known_here("k", token, SIMPLIVITY) is None
    shorter = guard.known_here("k", token, Lifetimes(ttl=60))  # a reloaded pack: its own lifetimes object
    assert isinstance(shorter, TokenRejection) and shorter.reason is Reason.TTL_EXPIRED
    unissued = guard.known_here("k", facts(issued=None), SIMPLIVITY)  # the same key with other facts
    assert isinstance(unissued, TokenRejection) and unissued.reason is Reason.MISSING_CLAIM
    assert guard.known_here("k", token, SIMPLIVITY) is None


async def test_known_here_stops_at_a_revocation_and_at_idle() -> None:
    clock = Clock(ISSUED + 10)
    guard = TokenStateGuard(MemoryStore(), clock=clock)
    token = revocable()
    assert await guard.check_revoked("k", token) is None
    assert guard.known_here("k", token, SIMPLIVITY) is None
    await guard.revoke("subject", "alice", clock.now)
    assert guard.known_here("k", token, SIMPLIVITY) is Pending.STORE  # the awaited check refuses it
    refused = await guard.check_revoked("k", token)
    assert refused is not None and refused.reason is Reason.REVOKED
    other = facts()
    assert await guard.check_revoked("j", other) is None
    assert guard.known_here("j", other, SIMPLIVITY) is None
    clock.now = ISSUED + 400
    assert await guard.check_revoked("j", other) is None
    guard.record_use_now("j", other, SIMPLIVITY)
    clock.now = ISSUED + 999  # 599 s after the use here
    assert await guard.check_revoked("j", other) is None
    assert guard.known_here("j", other, SIMPLIVITY) is None
    clock.now = ISSUED + 1000  # idle by what this process knows: only the store can tell
    assert await guard.check_revoked("j", other) is None
    assert guard.known_here("j", other, SIMPLIVITY) is Pending.STORE


async def test_what_known_here_remembers_per_token_is_bounded() -> None:
    guard = TokenStateGuard(MemoryStore(), clock=Clock(ISSUED + 10), remembered=3)
    for index in range(20):
        assert await guard.check_revoked(f"k{index}", facts()) is None
        assert guard.known_here(f"k{index}", facts(), SIMPLIVITY) is None
    assert len(guard._within) <= 3


async def test_hits_the_source_counts_itself_are_read_like_every_other_count() -> None:
    metrics = GatewayMetrics()
    source = JwtSource(settings(), on_cache=metrics.token_cache_lookups("svt"))
    token = token_for("HS256", claims())

    def lookups(result: str) -> float | None:
        return metrics.registry.get_sample_value("labgate_token_cache_lookups_total", {"upstream": "svt", "result": result})

    try:
        assert isinstance(await source.verify(token), TokenFacts)
        for _ in range(3):
            assert source.verify_here(token) is not None
        assert (lookups("hit"), lookups("miss")) == (3, 1)
        await source.verify(token)  # the awaited check finds it cached too
        assert (lookups("hit"), lookups("miss")) == (4, 1)
    finally:
        await source.close()
