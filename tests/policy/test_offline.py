"""Deciding a request given as text: the gateway's steps before the policy, then the policy."""

from __future__ import annotations

import pytest

from proxy.ipaddrs import parse_ip
from proxy.policy.compile import compile_pack
from proxy.policy.load import load_pack_text
from proxy.policy.offline import decide_offline
from proxy.reasons import Reason
from proxy.token_facts import TokenFacts, TokenRejection

PACK = compile_pack(
    load_pack_text(
        "pack: demo\ntoken_types:\n  reader:\n    routes: [GET /api/hosts]\n    client_ips: [10.0.0.0/8]\n",
        "demo.yaml",
    )
)
READER = TokenFacts(token_type="reader", token_hash="0123456789ab")


@pytest.mark.parametrize(
    "method, target, reason, rule",
    [
        ("GET", "/api/hosts", Reason.ALLOWED, "demo/reader/routes/GET /api/hosts"),
        ("POST", "/api/hosts", Reason.METHOD_NOT_ALLOWED, "demo/reader/routes"),
        ("TRACE", "/api/hosts", Reason.METHOD_NOT_SUPPORTED, None),
        ("get", "/api/hosts", Reason.METHOD_NOT_SUPPORTED, None),
        ("GET", "/api/%2fhosts", Reason.AMBIGUOUS_PATH, None),
        ("GET", "http://x/api/hosts", Reason.BAD_REQUEST, None),
        ("GET", "/api/hosts?a=1&b=2&c=3", Reason.BAD_QUERY, None),
    ],
    ids=["allowed", "method", "trace", "lower_case_method", "encoded_slash", "absolute_form", "too_many_params"],
)
def test_text_requests_get_the_gateways_decision(method: str, target: str, reason: Reason, rule: str | None) -> None:
    decision = decide_offline(method, target, parse_ip("10.1.1.1"), READER, PACK, max_query_params=2)
    assert (decision.reason, decision.rule) == (reason, rule)


def test_an_unknown_client_meets_the_ip_allowlist() -> None:
    decision = decide_offline("GET", "/api/hosts", None, READER, PACK)
    assert (decision.reason, decision.rule) == (Reason.CLIENT_IP_UNKNOWN, "demo/reader/client_ips")


def test_a_rejected_token_is_refused_whatever_the_request() -> None:
    rejected = TokenRejection(Reason.BAD_SIGNATURE, "the signature does not verify")
    assert decide_offline("GET", "/api/hosts", parse_ip("10.1.1.1"), rejected, PACK).reason is Reason.BAD_SIGNATURE
