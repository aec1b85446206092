"""One request's way through the gateway, as plain data: what its answer and its record need.

An :class:`Exchange` exists for every request, including those refused before
any upstream was found; a :class:`Routed` exchange is one whose target passed
the path contract and found its upstream, so the flow after routing carries
no optional fields it must check.
"""

from __future__ import annotations

import itertools
import os
import re
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from proxy.config import Upstream
from proxy.credentials.base import UpstreamCredential
from proxy.gateway.client_token import ClientToken
from proxy.gateway.headers import HeaderFilter
from proxy.gateway.transport import UpstreamTransport
from proxy.ipaddrs import IPAddress
from proxy.paths import RequestTarget
from proxy.policy.compile import CompiledPack
from proxy.policy.decision_memo import DecisionMemo
from proxy.policy.model import HeaderRules, Lifetimes
from proxy.token_facts import TokenFacts, TokenRejection
from proxy.tokens.source import TokenSource

_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


@dataclass
class UpstreamRuntime:
    """What serving one upstream needs at run time."""

    upstream: Upstream
    pack: CompiledPack
    source: TokenSource
    transport: UpstreamTransport
    base_path: str  # the upstream URL's /base/path ("" for none), before every checked target
    upstream_latency: Any  # this upstream's child of labgate_upstream_duration_seconds
    credential: UpstreamCredential | None = None  # replaces the client's Authorization (docs/how-to/upstream-credentials.md)
    client_authorization: bool = True  # the appliance issued the client's token and must see it
    header_rules: HeaderRules = HeaderRules()  # which client headers the appliance may see (pack + upstream)
    header_filter: HeaderFilter = field(init=False)  # header_rules, with its verdicts remembered per header name
    decisions: DecisionMemo = field(init=False)  # the pack's decisions, remembered for repeated requests

    def __post_init__(self) -> None:
        self.header_filter = HeaderFilter(self.header_rules)
        self.decisions = DecisionMemo(self.pack)


@dataclass(frozen=True, slots=True)
class RoutePlan:
    """What a method and checked target mean on one upstream before any header or token is read.

    Worked out once per (method, target, host) with the route itself and cached
    with it, so a repeated request reads these answers instead of walking the
    pack's public and body route tries again.
    """

    query_override: bool  # a ``_method`` query parameter (method override)
    body_allowed: bool  # a body is allowed on this method here (a bodiless method needs a body route)
    public: str | None  # the rule id of the pack's public route that matches, if any
    upstream_target: str  # what the appliance is asked for: its base path, then the checked raw target


@dataclass(slots=True)  # one per request: not frozen, whose __init__ costs three times as much; never changed
class TokenUse:
    """What recording a use of a verified token needs (idle lifetimes, live-token counts)."""

    key: str
    facts: TokenFacts
    lifetimes: Lifetimes


@dataclass(slots=True)
class Exchange:
    """Every request: what its answer and its decision-log line need, filled in as they are learnt.

    ``runtime`` and ``target`` stay empty for a request refused before routing;
    the record then names no upstream or path.
    """

    request: web.BaseRequest
    request_id: str
    started: float
    runtime: UpstreamRuntime | None = None
    target: RequestTarget | None = None
    token: TokenFacts | TokenRejection | None = None
    client_ip: IPAddress | None = None
    method: str = ""  # the method decided on: the request's own, or the one a forward-auth question names
    forward_auth: bool = False
    client_token: ClientToken | None = None  # the token as presented, when it was well-formed
    use: TokenUse | None = None  # recorded once the request reached the appliance
    rate_headers: dict[str, str] | None = None  # RateLimit and RateLimit-Policy for the answer


@dataclass(slots=True)  # one per request: not frozen, whose __init__ costs three times as much; never changed
class Routed:
    """An exchange whose target passed the path contract and found its upstream."""

    exchange: Exchange
    runtime: UpstreamRuntime
    target: RequestTarget
    request: web.BaseRequest  # the exchange's own, read several times a request
    plan: RoutePlan


class _RequestIds:
    """Fresh request ids: 64 random bits per process, then a counter (32 hex digits, like a uuid4's).

    Unique without a system call per request (``os.urandom`` was one); a forked
    child draws its own random half.
    """

    def __init__(self) -> None:
        self.reseed()

    def reseed(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(int.from_bytes(os.urandom(4), "big"))

    def fresh(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


_REQUEST_IDS = _RequestIds()
os.register_at_fork(after_in_child=_REQUEST_IDS.reseed)


def request_id_for(request: web.BaseRequest) -> str:
    """The client's ``X-Request-ID`` when it sent exactly one sane one, else a fresh id."""
    given = request.headers.getall("X-Request-ID", ())
    if len(given) == 1 and _SANE_REQUEST_ID.fullmatch(given[0]):
        return given[0]
    return _REQUEST_IDS.fresh()
