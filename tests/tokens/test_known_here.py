"""Answers without an await: each one given only when the awaited check would give the same now.

A request whose token is cached, cleared by the revocation view and within
its lifetimes by what this process knows is decided synchronously; anything
else is "ask the awaited check", which still checks everything.
"""

from __future__ import annotations

from proxy.policy.model import Lifetimes
from proxy.reasons import Reason
from proxy.store.memory import MemoryStore
from proxy.token_facts import TokenFacts, TokenRejection
from proxy.tokens.jwt_source import JwtSource
from proxy.tokens.state import Pending, TokenStateGuard
from tests.clock import Clock
from tests.tokens.keys import claims
from tests.tokens.test_jwt_source import settings, token_for
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
