"""Which headers cross labgate, in each direction.

Outbound headers are built by construction, never as "the request minus what
is known to be bad": each client header passes only if its kind allows it
(:mod:`proxy.header_names`: reserved headers never, sensitive ones only when
listed, ordinary ones in ``standard`` mode or when listed in ``strict`` mode),
minus whatever ``Connection`` names (RFC 9110 section 7.6.1; Traefik
CVE-2024-45410).  labgate then sets ``X-Forwarded-*``, ``X-Request-ID`` and the
one credential the appliance needs; the transport sets ``Host`` and framing.
"""

from __future__ import annotations

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.header_names import HOP_BY_HOP, header_key, header_kind
from proxy.policy.model import HeaderRules

_DROPPED_RESPONSE = HOP_BY_HOP | {"proxy-authenticate", "x-request-id"}


def connection_named(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    """Header keys listed in every ``Connection`` header (all hop-by-hop)."""
    named: set[str] = set()
    for value in headers.getall("Connection", ()):
        named.update(header_key(part.strip()) for part in value.split(",") if part.strip())
    return named


def passes(key: str, rules: HeaderRules) -> bool:
    """Whether a client header (by its key) may reach the appliance under ``rules``."""
    kind = header_kind(key)
    if kind == "reserved":
        return False
    if rules.mode == "strict" or kind == "sensitive":
        return key in rules.allow
    return True


def outbound_headers(
    incoming: CIMultiDictProxy[str],
    *,
    rules: HeaderRules,
    client_ip: str,
    proto: str,
    original_host: str | None,
    request_id: str,
    credential: tuple[str, str] | None,
) -> CIMultiDict[str]:
    """What the appliance sees: the client headers ``rules`` let pass, then labgate's own.

    ``credential``: the one ``(header, value)`` that authenticates the request upstream
    (labgate's upstream credential, or the appliance's own token re-emitted), or None.
    """
    named = connection_named(incoming) if "Connection" in incoming else ()
    result: CIMultiDict[str] = CIMultiDict()
    for name, value in incoming.items():
        key = header_key(name)
        if key not in named and passes(key, rules):
            result.add(name, value)
    result["X-Forwarded-For"] = client_ip
    result["X-Forwarded-Proto"] = proto
    if original_host:
        result["X-Forwarded-Host"] = original_host
    result["X-Request-ID"] = request_id
    if credential is not None:
        result[credential[0]] = credential[1]
    return result


def response_headers(upstream: CIMultiDictProxy[str], request_id: str) -> CIMultiDict[str]:
    """The appliance's response headers minus hop-by-hop ones, plus our request id."""
    dropped = _DROPPED_RESPONSE | connection_named(upstream) if "Connection" in upstream else _DROPPED_RESPONSE
    result = CIMultiDict([(name, value) for name, value in upstream.items() if header_key(name) not in dropped])
    result["X-Request-ID"] = request_id
    return result
