"""Which headers cross labgate, in each direction, and the bearer token itself.

Outbound headers are built from the request minus everything a client must not
be able to tell the appliance (RFC 9110 section 7.6.1 hop-by-hop headers, the
headers ``Connection`` names — Traefik CVE-2024-45410 —, method overrides,
client-sent forwarding and identity headers); labgate then sets ``Host`` and
``X-Forwarded-*`` itself.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.reasons import Reason

HOP_BY_HOP = frozenset(
    {
        "connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "proxy-connection",
        "te", "trailer", "transfer-encoding", "upgrade",
    }
)
# A client could otherwise turn an allowed POST into a DELETE at the appliance.
METHOD_OVERRIDES = frozenset({"x-http-method-override", "x-http-method", "x-method-override"})
# Only labgate says who the client is and how it connected (security rule 6, 9).
CLIENT_IDENTITY = frozenset(
    {
        "forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "x-forwarded-port",
        "x-forwarded-prefix", "x-forwarded-server", "x-real-ip", "x-client-ip", "true-client-ip",
        "x-forwarded-user", "x-forwarded-email", "x-forwarded-groups", "x-authenticated-user",
        "x-remote-user", "remote-user", "x-auth-request-user", "x-auth-request-email", "x-user",
        "x-original-url", "x-rewrite-url", "x-original-uri", "x-original-method",
    }
)
# Set by labgate, or (Host, from the upstream URL) by the HTTP client itself.
REPLACED = frozenset({"host", "expect", "x-request-id"})

# RFC 6750 section 2.1 b64token.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
MAX_TOKEN_LENGTH = 16384


# Computed once: these run on every request.
_DROPPED_OUTBOUND = HOP_BY_HOP | METHOD_OVERRIDES | CLIENT_IDENTITY | REPLACED
_DROPPED_RESPONSE = HOP_BY_HOP | {"x-request-id"}


def connection_named(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    """Header names listed in every ``Connection`` header (all hop-by-hop)."""
    named: set[str] = set()
    for value in headers.getall("Connection", ()):
        named.update(part.strip().lower() for part in value.split(",") if part.strip())
    return named


def _without(headers: CIMultiDictProxy[str], dropped: frozenset[str]) -> CIMultiDict[str]:
    if "Connection" in headers:
        dropped = dropped | connection_named(headers)
    return CIMultiDict([(name, value) for name, value in headers.items() if name.lower() not in dropped])


def outbound_headers(
    incoming: CIMultiDictProxy[str],
    *,
    client_ip: str,
    proto: str,
    original_host: str | None,
    request_id: str,
    forward_authorization: bool = True,
) -> CIMultiDict[str]:
    dropped = _DROPPED_OUTBOUND if forward_authorization else _DROPPED_OUTBOUND | {"authorization"}
    result = _without(incoming, dropped)
    result["X-Forwarded-For"] = client_ip
    result["X-Forwarded-Proto"] = proto
    if original_host:
        result["X-Forwarded-Host"] = original_host
    result["X-Request-ID"] = request_id
    return result


def response_headers(upstream: CIMultiDictProxy[str], request_id: str) -> CIMultiDict[str]:
    """The appliance's response headers minus hop-by-hop ones, plus our request id."""
    result = _without(upstream, _DROPPED_RESPONSE)
    result["X-Request-ID"] = request_id
    return result


@dataclass(frozen=True)
class BearerProblem:
    reason: Reason
    detail: str


def bearer_token(headers: CIMultiDictProxy[str]) -> str | BearerProblem:
    """Exactly one ``Authorization: Bearer <b64token>`` header (RFC 6750 section 2.1).

    Two Authorization headers are refused: aiohttp's ``get`` returns the first
    while an appliance might read the last.
    """
    values = headers.getall("Authorization", [])
    if not values:
        return BearerProblem(Reason.MISSING_TOKEN, "an Authorization: Bearer header is required")
    if len(values) > 1:
        return BearerProblem(Reason.MALFORMED_AUTHORIZATION, "exactly one Authorization header is allowed")
    scheme, _, token = values[0].strip().partition(" ")
    if scheme.lower() != "bearer":
        return BearerProblem(Reason.MALFORMED_AUTHORIZATION, "the Authorization scheme must be Bearer")
    token = token.strip()
    if not token or len(token) > MAX_TOKEN_LENGTH or not _B64TOKEN.fullmatch(token):
        return BearerProblem(Reason.MALFORMED_AUTHORIZATION, "the bearer token is empty or malformed")
    return token
