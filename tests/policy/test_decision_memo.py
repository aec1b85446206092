"""A remembered decision is always the decision: the memo answers what decide() answers, for every request."""

from __future__ import annotations

import random

from proxy.ipaddrs import AddressSet, parse_ip
from proxy.paths import parse_target
from proxy.policy.decide import RequestFacts, decide
from proxy.policy.decision_memo import DecisionMemo
from proxy.reasons import Reason
from proxy.token_facts import TokenFacts, TokenRejection
from tests.policy.test_decide import COMMVAULT, SIMPLIVITY, token

METHODS = ["GET", "POST", "PUT", "DELETE", "HEAD"]
TARGETS = [
    "/api/hosts", "/api/hosts?offset=0&limit=50", "/api/hosts?sort=name", "/api/backups/7/restore",
    "/api/backups?order=asc", "/api/datastores", "/api/other", "/API/HOSTS", "/commandcenter/api/Client",
]
ADDRESSES = [None, "192.0.2.10", "10.1.2.3", "1.1.1.20", "2001:db8::2", "203.0.113.9"]


def test_the_memo_answers_what_decide_answers_for_thousands_of_random_repeated_requests() -> None:
    rng = random.Random(20261206)
    targets = [parse_target(t) for t in TARGETS]
    addresses = [parse_ip(a) if a else None for a in ADDRESSES]
    tokens = [
        token("emergency"), token("office"), token("no-sort"), token("password"), token("missing-type"),
        token("office", client_ips=AddressSet.parse(["203.0.113.0/24"])),
        token("password", path_prefixes=("/api/hosts",)),
    ]
    for pack in (SIMPLIVITY, COMMVAULT):
        memo = DecisionMemo(pack, max_remembered=50)  # small, so it also starts again many times
        for _ in range(3000):
            method, target = rng.choice(METHODS), rng.choice(targets)
            address, facts = rng.choice(addresses), rng.choice(tokens)
            assert memo.decide(method, target, address, facts) == decide(RequestFacts(method, target, address), facts, pack)


def test_equal_but_distinct_facts_are_decided_afresh_never_taken_for_each_other() -> None:
    memo = DecisionMemo(SIMPLIVITY)
    target = parse_target("/api/hosts")
    inside, outside = parse_ip("10.1.2.3"), parse_ip("192.0.2.10")
    office = token("office")
    assert memo.decide("GET", target, inside, office).allowed
    assert memo.decide("GET", target, outside, office).reason is Reason.CLIENT_IP_NOT_ALLOWED
    # The same type with its own allowlist is another object: its own decision, not the remembered one.
    narrowed = TokenFacts(token_type="office", token_hash="0123456789ab", client_ips=AddressSet.parse(["192.0.2.0/24"]))
    assert memo.decide("GET", target, inside, narrowed).reason is Reason.CLIENT_IP_NOT_ALLOWED
    assert memo.decide("GET", parse_target("/api/hosts"), inside, office).allowed  # an equal target, another object


def test_a_rejected_token_is_decided_with_its_own_reason_and_not_remembered() -> None:
    memo = DecisionMemo(SIMPLIVITY)
    rejection = TokenRejection(Reason.TOKEN_EXPIRED, "expired")
    decision = memo.decide("GET", parse_target("/api/hosts"), None, rejection)
    assert not decision.allowed and decision.reason is Reason.TOKEN_EXPIRED
    assert memo._remembered == {}


def test_the_memo_is_bounded() -> None:
    memo = DecisionMemo(SIMPLIVITY, max_remembered=10)
    facts = token("emergency")
    for n in range(100):
        memo.decide("GET", parse_target(f"/api/hosts?offset={n}"), None, facts)
        assert len(memo._remembered) <= 10
