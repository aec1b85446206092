"""Forward-auth: a proxy in front (nginx ``auth_request``, Traefik ``ForwardAuth``) asks, labgate decides.

The proxy forwards to the appliance itself and first asks labgate about each
request; the answer's status is the verdict (2xx forward, 401/403 refuse).
labgate decides exactly as if it were forwarding the request: the same path
contract, routing, token checks and policy (``Gateway._decide``).  This module
reads the question and writes the answer; it never forwards anything.

Reading the question (docs/how-to/forward-auth.md):

- only a peer in ``trusted_proxies`` may ask: the headers describe another
  client's request, and only a proxy labgate trusts may say what it was.  The
  client IP then comes from the forwarding header, as for any trusted peer;
- one family of headers names the request, each header exactly once: nginx's
  ``X-Original-Method`` + ``X-Original-URI`` or Traefik's
  ``X-Forwarded-Method`` + ``X-Forwarded-Uri``.  Both families at once are
  refused: a proxy that sets one may pass the other on from the client;
- the host for routing is ``X-Forwarded-Host`` (once), else ``Host``;
- a request carrying a method-override header is refused: labgate strips them
  when it forwards itself, but here the proxy forwards whatever the client sent,
  and an appliance honouring ``X-HTTP-Method-Override: DELETE`` would run a
  DELETE that was decided as a GET.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from aiohttp import web
from multidict import CIMultiDictProxy

from proxy.gateway.errors import error_response
from proxy.header_names import header_key, is_method_override
from proxy.ipaddrs import AddressSet, InvalidAddress, parse_ip
from proxy.policy.decide import Decision, deny
from proxy.reasons import Reason

# Which headers name the original request, per proxy: (method, target).
NGINX_HEADERS = ("X-Original-Method", "X-Original-URI")
TRAEFIK_HEADERS = ("X-Forwarded-Method", "X-Forwarded-Uri")
FAMILIES = (NGINX_HEADERS, TRAEFIK_HEADERS)
HOST_HEADER = "X-Forwarded-Host"

# The verdict in headers, for nginx's ``auth_request_set`` and Traefik's ``authResponseHeaders``.
REASON_HEADER = "X-Labgate-Reason"
TOKEN_TYPE_HEADER = "X-Labgate-Token-Type"
RULE_HEADER = "X-Labgate-Rule"
UPSTREAM_HEADER = "X-Labgate-Upstream"
SHADOW_HEADER = "X-Labgate-Shadow"


@dataclass(frozen=True)
class OriginalRequest:
    """The request a proxy asks about: what ``Gateway._decide`` needs besides the asking request."""

    method: str
    raw_target: str
    host: str | None


def original_request(request: web.BaseRequest, trusted: AddressSet) -> OriginalRequest | Decision:
    """The request to decide, or the denial that answers a question labgate will not take."""
    if not _is_trusted(request.remote, trusted):
        return deny(Reason.FORWARD_AUTH_UNTRUSTED, "only a proxy in trusted_proxies may ask for forward-auth decisions")
    headers = request.headers
    present = [family for family in FAMILIES if any(name in headers for name in family)]
    if not present:
        return _bad_headers(
            "name the request with X-Original-Method and X-Original-URI (nginx) "
            "or X-Forwarded-Method and X-Forwarded-Uri (Traefik)"
        )
    if len(present) > 1:
        return _bad_headers("both X-Original-* and X-Forwarded-Method/-Uri headers: exactly one family may name the request")
    method_header, target_header = present[0]
    method = _one(headers, method_header)
    if isinstance(method, Decision):
        return method
    target = _one(headers, target_header)
    if isinstance(target, Decision):
        return target
    host = _one(headers, HOST_HEADER) if HOST_HEADER in headers else headers.get("Host")
    if isinstance(host, Decision):
        return host
    if host is not None and "," in host:
        return _bad_headers(f"{HOST_HEADER} must name one host")
    override = next((name for name in headers if is_method_override(header_key(name))), None)
    if override is not None:
        return deny(
            Reason.METHOD_OVERRIDE,
            f"{override[:40]} is not accepted: the proxy in front would pass it on to the appliance",
        )
    return OriginalRequest(method, target, host)


def _is_trusted(peer: str | None, trusted: AddressSet) -> bool:
    try:
        return parse_ip(peer or "") in trusted
    except InvalidAddress:
        return False  # a Unix socket or an odd transport: nobody we listed


def _one(headers: CIMultiDictProxy[str], name: str) -> str | Decision:
    values = headers.getall(name, ())
    if len(values) != 1 or not values[0]:
        return _bad_headers(f"exactly one non-empty {name} header is needed ({len(values)} given)")
    return values[0]


def _bad_headers(detail: str) -> Decision:
    return deny(Reason.FORWARD_AUTH_HEADERS, detail)


def forward_auth_answer(decision: Decision, request_id: str, upstream: str | None) -> web.Response:
    """200 when the request may be forwarded, else the gateway's own error answer; the verdict in headers too.

    nginx passes only 2xx, 401 and 403 through ``auth_request`` and turns every
    other status into 500; labgate still answers the gateway's status (Traefik
    passes it on as is), and the shipped nginx example restores it.
    """
    if decision.allowed:
        body = {
            "allowed": True,
            "reason": decision.reason.code,  # in shadow mode: what would have denied it
            "rule": decision.rule,
            "token_type": decision.token_type,
            "upstream": upstream,
            "request_id": request_id,
        }
        response = web.Response(
            body=json.dumps(body).encode(),
            content_type="application/json",
            headers={"X-Request-ID": request_id, "Cache-Control": "no-store"},
        )
    else:
        response = error_response(decision.reason, decision.detail, request_id)
    verdict = {
        REASON_HEADER: decision.reason.code,
        TOKEN_TYPE_HEADER: decision.token_type,
        RULE_HEADER: decision.rule,
        UPSTREAM_HEADER: upstream,
        SHADOW_HEADER: "true" if decision.shadow else None,
    }
    for name, value in verdict.items():
        if value and value.isascii() and value.isprintable():  # names from config: never a header injection
            response.headers[name] = value
    return response
