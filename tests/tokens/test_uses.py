"""Uses of tokens: the latest one known at once, each written once per batch with when it may be forgotten."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from proxy.policy.model import Lifetimes
from proxy.store.base import StoreUnavailable, TokenUse
from proxy.store.memory import MemoryStore
from proxy.token_facts import TokenFacts
from proxy.tokens.state import TokenStateGuard
from proxy.tokens.uses import UseLog
from tests.clock import Clock

ISSUED = 1_000_000.0


class BatchStore(MemoryStore):
    """A memory store that keeps each batch of uses it was given, and can refuse them."""

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[list[TokenUse]] = []
        self.down = False

    async def touch_many(self, uses: Sequence[TokenUse]) -> None:
        if self.down:
            raise StoreUnavailable("down")
        self.batches.append(list(uses))
        await super().touch_many(uses)


def token(expires: float | None) -> TokenFacts:
    return TokenFacts(token_type="emergency", token_hash="abc", issued_at=ISSUED, expires_at=expires)


@pytest.mark.parametrize(
    "expires, lifetimes, until",
    [
        (ISSUED + 3600, Lifetimes(idle=600, absolute=86_400), ISSUED + 3600),  # the token's own exp comes first
        (ISSUED + 10**6, Lifetimes(idle=600, absolute=86_400), ISSUED + 86_400),  # its type's absolute lifetime does
        (ISSUED + 10**6, Lifetimes(idle=600), ISSUED + 10**6),
        (None, Lifetimes(idle=600), ISSUED + 100 + 600),  # nothing ends it: one idle period after the use
        (None, Lifetimes(idle=600, absolute=86_400), ISSUED + 86_400),
    ],
)
async def test_a_use_is_kept_until_the_token_dies_anyway(expires: float | None, lifetimes: Lifetimes, until: float) -> None:
    store = BatchStore()
    guard = TokenStateGuard(store, clock=Clock(ISSUED + 100), write_interval=3600)
    guard.record_use_now("k", token(expires), lifetimes)
    await guard.flush()
    assert store.batches == [[TokenUse("k", ISSUED + 100, until)]]
    await guard.close()


async def test_only_types_with_an_idle_lifetime_keep_uses() -> None:
    store = BatchStore()
    guard = TokenStateGuard(store, clock=Clock(ISSUED + 100), write_interval=3600)
    guard.record_use_now("k", token(None), Lifetimes(ttl=600, absolute=3600))
    guard.record_use_now("j", TokenFacts(token_type="t", token_hash="abc"), Lifetimes(idle=600))  # no iat
    await guard.flush()
    assert store.batches == []
    await guard.close()


IDLE = Lifetimes(idle=600)


def use(uses: UseLog, clock: Clock, key: str, at: float, expires: float | None = None) -> None:
    clock.now = at
    uses.record(key, token(expires), IDLE)


async def test_the_latest_use_known_never_goes_back() -> None:
    clock = Clock(ISSUED)
    uses = UseLog(BatchStore(), clock=clock, interval=3600)
    use(uses, clock, "k", ISSUED + 10)
    use(uses, clock, "k", ISSUED + 5)  # the clock was set back
    uses.learned("k", ISSUED + 7)  # the store tells of an older use
    assert uses.latest("k") == uses.latest_uses["k"] == ISSUED + 10
    uses.learned("k", ISSUED + 20)  # and of a newer one, elsewhere
    assert uses.latest("k") == ISSUED + 20
    await uses.close()


async def test_each_token_is_written_once_per_batch_with_its_latest_use() -> None:
    clock, store = Clock(ISSUED), BatchStore()
    uses = UseLog(store, clock=clock, interval=3600)
    for at in (1.0, 3.0, 2.0):
        use(uses, clock, "k", ISSUED + at, expires=ISSUED + 100 + at)
    use(uses, clock, "j", ISSUED)
    await uses.flush()
    assert store.batches == [[TokenUse("k", ISSUED + 3.0, ISSUED + 103.0), TokenUse("j", ISSUED, ISSUED + 600)]]
    await uses.flush()  # nothing waits: no store call
    assert len(store.batches) == 1
    await uses.close()


async def test_a_batch_the_store_refused_waits_for_the_next_unless_a_later_use_replaced_it() -> None:
    clock, store = Clock(ISSUED), BatchStore()
    uses = UseLog(store, clock=clock, interval=3600)
    use(uses, clock, "k", ISSUED + 1)
    use(uses, clock, "j", ISSUED + 1)
    store.down = True
    with pytest.raises(StoreUnavailable):
        await uses.flush()
    assert uses.waiting() == 2
    store.down = False
    use(uses, clock, "k", ISSUED + 2)  # meanwhile: the later use wins
    await uses.flush()
    assert sorted(store.batches[0], key=lambda kept: kept.key) == [
        TokenUse("j", ISSUED + 1, ISSUED + 601), TokenUse("k", ISSUED + 2, ISSUED + 602)
    ]
    await uses.close()


async def test_past_its_bound_the_token_written_least_lately_is_forgotten_first() -> None:
    clock = Clock(ISSUED)
    uses = UseLog(BatchStore(), clock=clock, interval=3600, remembered=2)
    use(uses, clock, "a", ISSUED + 1)
    use(uses, clock, "b", ISSUED + 2)
    use(uses, clock, "a", ISSUED + 3)  # written again: now the latest
    use(uses, clock, "c", ISSUED + 4)
    assert dict(uses.latest_uses) == {"a": ISSUED + 3, "c": ISSUED + 4}
    assert uses.waiting() <= 2
    await uses.close()
