"""Deciding a request given as text, without a network: ``labgate explain`` and ``labgate test``.

Both must reach exactly the decision the gateway would, so both go through
this one function: the method check the gateway makes before any policy, the
path contract, then :func:`~proxy.policy.decide.decide`.  What it cannot know
offline it does not pretend to: the token's lifetimes live in the store and
are not evaluated here.
"""

from __future__ import annotations

from proxy.ipaddrs import IPAddress
from proxy.paths import TargetError, parse_target
from proxy.policy.compile import CompiledPack
from proxy.policy.decide import Decision, RequestFacts, decide, deny
from proxy.policy.model import ROUTE_METHODS
from proxy.reasons import Reason
from proxy.token_facts import TokenFacts, TokenRejection

DEFAULT_MAX_QUERY_PARAMS = 256  # limits.max_query_params when a config does not say


def decide_offline(
    method: str,
    target_text: str,
    client_ip: IPAddress | None,
    token: TokenFacts | TokenRejection,
    pack: CompiledPack,
    *,
    max_query_params: int = DEFAULT_MAX_QUERY_PARAMS,
) -> Decision:
    """The gateway's steps for ``METHOD target`` from ``client_ip`` (None: unknown)."""
    if method not in ROUTE_METHODS:
        return deny(Reason.METHOD_NOT_SUPPORTED, f"method {method[:16]!r} is not supported")
    try:
        target = parse_target(
            target_text, max_query_params=max_query_params, merge_slashes=pack.pack.repeated_slashes == "merge"
        )
    except TargetError as exc:
        return deny(exc.reason, exc.detail)
    return decide(RequestFacts(method, target, client_ip), token, pack)
