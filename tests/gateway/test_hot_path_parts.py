"""The small parts the request path runs on every request: the pool's places, request ids, header lists."""

from __future__ import annotations

import asyncio
import random
import re

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.gateway.exchange import _RequestIds
from proxy.gateway.headers import HeaderFilter, RememberedHeads, answer_headers, header_value, outbound_headers, passes
from proxy.gateway.slots import Slots
from proxy.header_names import header_key
from proxy.policy.model import HeaderRules


async def test_a_free_place_is_taken_at_once_and_a_full_pool_hands_places_on_in_arrival_order() -> None:
    slots = Slots(1)
    assert slots.take_now()
    assert not slots.take_now()
    order: list[str] = []

    async def wait(name: str) -> None:
        await slots.take(5)
        order.append(name)

    first, second = asyncio.create_task(wait("first")), asyncio.create_task(wait("second"))
    await asyncio.sleep(0)
    assert not slots.take_now()  # others wait: a newcomer does not jump the queue
    slots.give()
    await first
    assert order == ["first"] and not second.done()
    slots.give()
    await second
    slots.give()
    assert order == ["first", "second"] and slots.take_now()


async def test_a_waiter_that_gives_up_leaves_no_place_lost() -> None:
    slots = Slots(1)
    assert slots.take_now()
    with pytest.raises(TimeoutError):
        await slots.take(0.01)
    cancelled = asyncio.create_task(slots.take(5))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    slots.give()
    assert slots.take_now()  # the place came back, not to a waiter that left


def test_fresh_request_ids_are_32_hex_digits_and_never_repeat() -> None:
    ids = _RequestIds()
    seen = {ids.fresh() for _ in range(10_000)}
    assert len(seen) == 10_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in seen)
    other = _RequestIds()  # another process draws its own random half (equal once in 2**64)
    assert other.fresh()[:16] != ids.fresh()[:16]
    before = ids.fresh()[:16]
    ids.reseed()  # what a forked child does first
    assert ids.fresh()[:16] != before


@pytest.mark.parametrize("mode", ["standard", "strict"])
def test_the_remembered_verdict_is_the_allow_model_s_for_every_spelling(mode: str) -> None:
    rules = HeaderRules(mode, frozenset({"x-remote-user", "accept"}))  # type: ignore[arg-type]
    remembered = HeaderFilter(rules)
    for name in ("Accept", "accept", "X-Remote-User", "X_Remote_User", "Cookie", "Authorization", "X-Forwarded-For",
                 "Content-Length", "Host", "X-Trace", "X.Real.IP"):
        assert remembered.passes(name) == passes(header_key(name), rules)
        assert remembered.passes(name) == passes(header_key(name), rules)  # the remembered one


def test_outbound_headers_are_the_passing_client_headers_then_labgate_s_own() -> None:
    incoming = CIMultiDictProxy(CIMultiDict([
        ("Host", "lab:8443"), ("Accept", "application/json"), ("Authorization", "Bearer abc"),
        ("Connection", "keep-alive, X-Trace"), ("X-Trace", "1"), ("X-Forwarded-For", "1.2.3.4"), ("Cookie", "a=b"),
    ]))
    built = outbound_headers(
        incoming, rules=HeaderFilter(HeaderRules()), client_ip="10.0.0.1", proto="https", original_host="lab:8443",
        credential=("Authorization", "Basic cred"),
    )
    assert built == [  # X-Request-ID is the transport's, sent last (test_http1_exchange.py)
        ("Accept", "application/json"), ("X-Forwarded-For", "10.0.0.1"), ("X-Forwarded-Proto", "https"),
        ("X-Forwarded-Host", "lab:8443"), ("Authorization", "Basic cred"),
    ]
    assert header_value(built, "authorization") == "Basic cred" and header_value(built, "Cookie") is None


def test_remembered_heads_are_bounded_emptied_when_full() -> None:
    remembered = RememberedHeads(3)
    for i in range(10):
        remembered.remember(("filter", i), (("X-Trace", str(i)),))
        assert len(remembered) <= 3
        assert remembered.get(("filter", i)) == (("X-Trace", str(i)),)
    assert remembered.get(("filter", 0)) is None


def test_answer_headers_drop_hop_by_hop_and_named_ones_and_take_labgate_s_own() -> None:
    upstream = [
        ("Content-Type", "application/json"), ("Content-Length", "12"), ("Connection", "X-Secret"), ("X-Secret", "s"),
        ("Keep-Alive", "timeout=5"), ("X-Request-ID", "theirs"), ("RateLimit", "theirs"), ("Proxy-Authenticate", "x"),
        ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
    ]
    assert answer_headers(upstream, "ours", {"RateLimit": "limit=10", "RateLimit-Policy": "10;w=60"}) == ([
        ("Content-Type", "application/json"), ("Content-Length", "12"), ("Set-Cookie", "a=1"), ("Set-Cookie", "b=2"),
        ("X-Request-ID", "ours"), ("RateLimit", "limit=10"), ("RateLimit-Policy", "10;w=60"),
    ], "12")


def _one_by_one(incoming: CIMultiDictProxy[str], rules: HeaderRules) -> list[tuple[str, str]]:
    """The allow model applied header by header, with nothing remembered: what a mask must reproduce."""
    named = set()
    for value in incoming.getall("Connection", ()):
        named |= {header_key(part.strip()) for part in value.split(",") if part.strip()}
    return [(n, v) for n, v in incoming.items() if passes(header_key(n), rules) and header_key(n) not in named]


def test_a_remembered_mask_keeps_exactly_the_headers_the_allow_model_passes_for_random_header_sets() -> None:
    rng = random.Random(7)
    names = ["Accept", "accept", "Authorization", "Cookie", "X-Trace", "Connection", "Content-Type", "X-Remote-User",
             "X-HTTP-Method-Override", "Host", "Te", "Upgrade", "X-Forwarded-For", "Via"]
    for rules in (HeaderRules(), HeaderRules("strict", frozenset({"accept", "x-remote-user"}))):
        remembered = HeaderFilter(rules)
        for _ in range(2000):
            picked = [(rng.choice(names), rng.choice(["a", "X-Trace", "accept, x-trace", "close"])) for _ in range(rng.randint(0, 6))]
            incoming = CIMultiDictProxy(CIMultiDict(picked))
            built = outbound_headers(incoming, rules=remembered, client_ip="10.0.0.1", proto="http", original_host=None,
                                     credential=None)
            assert built[:-2] == _one_by_one(incoming, rules)


def _answer_one_by_one(upstream: list[tuple[str, str]]) -> list[tuple[str, str]]:
    named = set()
    for name, value in upstream:
        if name.lower() == "connection":
            named |= {header_key(part.strip()) for part in value.split(",") if part.strip()}
    dropped = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
               "proxy-authenticate", "x-request-id"} | named
    return [(n, v) for n, v in upstream if header_key(n) not in dropped] + [("X-Request-ID", "ours")]


def test_answer_headers_remembered_per_name_set_drop_what_the_allow_model_drops_and_give_the_length_passed_on_for_random_answers() -> None:
    rng = random.Random(11)
    names = ["Content-Type", "Content-Length", "Connection", "connection", "Keep-Alive", "X-Secret", "Set-Cookie",
             "X-Request-ID", "Transfer-Encoding", "Date", "Proxy-Authenticate", "ETag"]
    values = ["keep-alive", "close", "X-Secret", "keep-alive, ETag", "1", "a=b", "Content-Length"]
    for _ in range(3000):
        upstream = [(rng.choice(names), rng.choice(values)) for _ in range(rng.randint(0, 7))]
        passed = _answer_one_by_one(upstream)
        assert answer_headers(upstream, "ours") == (passed, header_value(passed, "Content-Length") or "")
