"""Policy packs as plain immutable data: what an operator wrote, validated.

A pack defines the token types of one appliance family.  Parsing happens once,
in :mod:`proxy.policy.load`; nothing past the loader ever sees raw YAML.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from proxy.ipaddrs import AddressSet
from proxy.paths import normalize_query_name
from proxy.policy.rates import RateLimit

# Methods a route may name.  TRACE and CONNECT are refused outright by the
# gateway: no cross-site tracing, no tunnels through an API proxy.
ROUTE_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
ANY_METHOD = "*"
# Methods whose request may not carry a body unless a pack's ``bodies`` lists the route:
# a body there could say what the query may not (a GET with ``sort=name`` in it).
BODILESS_METHODS = frozenset({"GET", "HEAD", "DELETE", "OPTIONS"})

# A {param} binds exactly one non-empty segment from this set: the RFC 3986
# pchar set minus ';' and '%' (aiohttp's own router would bind '..' or a
# decoded 'a/b'; ours never can, because such paths are refused earlier).
PARAM_VALUE = re.compile(r"[A-Za-z0-9._~+:@!$'()*,=-]+")
_PARAM_NAME = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_LITERAL_SEGMENT = re.compile(r"[A-Za-z0-9._~+:@!$'()*,=-]+")


@dataclass(frozen=True)
class RouteTemplate:
    """``METHOD /path/{param}``: a method and a path template, segment by segment.

    ``segments`` holds literal text, or ``None`` where a ``{param}`` stands.
    """

    method: str
    segments: tuple[str | None, ...]
    text: str
    subtree: bool = False  # a deny rule ending in '/**': the path and everything below it

    @classmethod
    def parse(cls, text: str, *, allow_any_method: bool = False) -> RouteTemplate:
        """Parse ``GET /api/backups/{bkpId}/restore``; ValueError says what is wrong.

        Deny rules (``allow_any_method``) may end in ``/**``: the path and every
        path below it, so no deeper path can slip past the rule.
        """
        parts = text.split()
        if len(parts) != 2:
            raise ValueError(f"route {text!r} must be 'METHOD /path', e.g. 'GET /api/hosts'")
        method, path = parts
        if method == ANY_METHOD and allow_any_method:
            pass
        elif method not in ROUTE_METHODS:
            allowed = ", ".join(sorted(ROUTE_METHODS))
            extra = " or *" if allow_any_method else ""
            raise ValueError(f"route {text!r}: method must be one of {allowed}{extra}")
        subtree = path == "/**" or path.endswith("/**")
        if subtree and not allow_any_method:
            raise ValueError(f"route {text!r}: '/**' (everything below) is for deny rules only")
        if subtree:
            segments = parse_path_template(path[:-3] or "/", what=f"route {text!r}")
        else:
            segments = parse_path_template(path, what=f"route {text!r}")
        return cls(method, segments, f"{method} {path}", subtree)


def parse_path_template(path: str, *, what: str, params: bool = True) -> tuple[str | None, ...]:
    """Split ``/a/{b}/c`` into segments, refusing anything a request could not match."""
    if not path.startswith("/"):
        raise ValueError(f"{what}: path must start with '/'")
    if path == "/":
        return ()
    if path.endswith("/"):
        raise ValueError(f"{what}: path must not end with '/'")
    segments: list[str | None] = []
    for raw in path[1:].split("/"):
        if raw == "":
            raise ValueError(f"{what}: empty segment ('//')")
        if raw in (".", ".."):
            raise ValueError(f"{what}: dot segments are not allowed")
        if set(raw) == {"*"}:
            # Reads as a wildcard, which a path template has not ('/**' ends deny rules only).
            raise ValueError(f"{what}: a segment of only '*' is not a wildcard here; only deny rules may end in '/**'")
        if _PARAM_NAME.fullmatch(raw):
            if not params:
                raise ValueError(f"{what}: {{params}} are not allowed here")
            segments.append(None)
        elif "{" in raw or "}" in raw:
            raise ValueError(f"{what}: a {{param}} must be a whole segment, like /backups/{{bkpId}}")
        elif not _LITERAL_SEGMENT.fullmatch(raw):
            raise ValueError(f"{what}: segment {raw!r} has characters a path cannot carry unencoded")
        else:
            segments.append(raw)
    return tuple(segments)


@dataclass(frozen=True)
class QueryRule:
    """Which query parameter names may appear: an allowlist or a denylist.

    Names are stored normalized (casefolded, ``[...]`` suffix cut) exactly as
    request parameter names are, so ``SORT``, ``s%6Frt`` and ``sort[]`` all meet
    the rule written as ``sort``.
    """

    mode: Literal["allow", "deny"]
    names: frozenset[str]

    @classmethod
    def of(cls, mode: Literal["allow", "deny"], names: list[str]) -> QueryRule:
        return cls(mode, frozenset(normalize_query_name(n) for n in names))

    def first_violation(self, names: tuple[str, ...]) -> str | None:
        """The first occurrence that breaks the rule, or None when all pass."""
        for name in names:
            if (name in self.names) != (self.mode == "allow"):
                return name
        return None


@dataclass(frozen=True)
class Lifetimes:
    """Seconds; ``None`` when the type sets no such limit.

    ttl: from issue; idle: since last use (SimpliVity: 10 min); absolute: from
    issue even with continuous use (SimpliVity: 24 h); refresh_until: how long
    after creation a token may still be renewed (Commvault: 90 days).
    """

    ttl: float | None = None
    idle: float | None = None
    absolute: float | None = None
    refresh_until: float | None = None

    @property
    def enforced(self) -> bool:
        """Whether a request must check the token against these limits (refresh_until is for renewals)."""
        return self.ttl is not None or self.idle is not None or self.absolute is not None


@dataclass(frozen=True)
class TokenType:
    """A named set of restrictions (docs/concepts/policy-packs.md): routes, prefixes, denials, query, IPs, lifetimes."""

    name: str
    description: str = ""
    routes: tuple[RouteTemplate, ...] = ()
    path_prefixes: tuple[str, ...] = ()
    deny: tuple[RouteTemplate, ...] = ()
    # Exact operations (one method, {params} bind one plain segment) the deny
    # rules do not cover (Commvault: renewing is POST /V4/AccessToken/Renew,
    # under a denied /V4/AccessToken/**; VCF: reading an emergency client).
    # Not an allow: an allowing rule must still admit the request.
    deny_except: tuple[RouteTemplate, ...] = ()
    query: QueryRule | None = None
    # A route's own query rule (a ``routes`` entry written as a mapping with ``query``):
    # on that route it replaces ``query``, so one route's parameter is not allowed on all.
    route_queries: tuple[tuple[RouteTemplate, QueryRule], ...] = ()
    client_ips: AddressSet | None = None
    requires_token_prefixes: bool = False
    # How a token's own endpoint entries open paths (proxy.policy.endpoints):
    # "whole-segments", or Commvault's "starting-with" ("/plans" opens /PlanSummary).
    token_prefix_match: str = "whole-segments"
    lifetimes: Lifetimes = field(default_factory=Lifetimes)
    # Rolling out a stricter policy: client IP, operation and query denials are
    # logged and counted but the request is forwarded.  Token checks still deny.
    shadow: bool = False
    # Requests per period for this type's tokens (per token, subject or client id); None: no limit, no cost.
    rate_limit: RateLimit | None = None
    # At most this many of the type's requests at the appliance at once (on top of the upstream's cap).
    max_in_flight: int | None = None


@dataclass(frozen=True)
class HeaderRules:
    """Which of a client's request headers reach the appliance (see :mod:`proxy.header_names`).

    ``standard``: every ordinary header, plus the sensitive ones in ``allow``;
    ``strict``: only the headers in ``allow``.  Reserved headers (credentials,
    client addresses, framing) never pass in either mode.  ``allow`` holds
    header keys (lower case, ``_`` and ``.`` read as ``-``).
    """

    mode: Literal["standard", "strict"] = "standard"
    allow: frozenset[str] = frozenset()

    def merged(self, other: HeaderRules | None) -> HeaderRules:
        """An upstream's rules on top of its pack's: its mode wins when it sets one, the lists add up."""
        if other is None:
            return self
        return HeaderRules(other.mode, self.allow | other.allow)


# Error body shapes: labgate's own (RFC 6749 section 5.2 names, plus reason and
# request id), or Commvault's {"errorCode", "errorMessage"} that its SDK reads.
ERROR_FORMATS = ("labgate", "commvault")


@dataclass(frozen=True)
class Pack:
    """The token types of one appliance family, from one file.

    ``public``: routes a vendor client calls before it has a token (Commvault's
    ``GET /``, SimpliVity's ``GET /api/version``), forwarded without any
    credential.  ``bodies``: routes whose vendor API takes a body on a method
    that otherwise may not carry one (``GET HEAD DELETE OPTIONS``).
    ``repeated_slashes``: ``merge`` when the appliance reads ``//`` as ``/``
    (:mod:`proxy.paths`). ``error_format``: the body shape of labgate's error answers on this pack's
    upstreams (one of :data:`ERROR_FORMATS`), so a vendor's own client reads
    a refusal as it reads its appliance's.
    """

    name: str
    file: str
    token_types: Mapping[str, TokenType]
    case_insensitive_paths: bool = False
    repeated_slashes: str = "refuse"  # or "merge": the appliance reads '//' as '/' (Commvault)
    error_format: str = "labgate"
    description: str = ""
    headers: HeaderRules = field(default_factory=HeaderRules)
    public: tuple[RouteTemplate, ...] = ()
    bodies: tuple[RouteTemplate, ...] = ()
