"""An appliance's own token and revoke endpoints, passed through for an ``observe`` source.

The token endpoint needs no bearer token (it is where tokens come from).  The
request is read whole (it is a small form), checked, forwarded byte for byte,
and a successful answer teaches labgate the new token's type before the client
gets it: a token labgate could not record is never handed out (fail closed).
The revoke endpoint ends the presenting token in labgate first, then at the
appliance.

See :mod:`proxy.tokens.observe` for what is read and what is stored.
"""

from __future__ import annotations

import base64
import binascii

from aiohttp import web

from proxy.errors import LabgateError
from proxy.gateway.client_token import ClientToken
from proxy.gateway.exchange import Routed
from proxy.gateway.forwarder import Forwarder, once
from proxy.gateway.headers import response_headers
from proxy.gateway.transport import ClientBodyError, UpstreamError, UpstreamResponse
from proxy.paths import RequestTarget
from proxy.policy.compile import fold_segment
from proxy.policy.decide import Decision
from proxy.reasons import Reason
from proxy.store.base import StoreUnavailable
from proxy.token_facts import TokenFacts
from proxy.tokens.observe import (
    MAX_TOKEN_ANSWER_BYTES,
    MAX_TOKEN_REQUEST_BYTES,
    BadTokenRequest,
    ObserveSource,
    basic_client_id,
    read_token_answer,
    read_token_request,
)


class AnswerTooLarge(LabgateError):
    """The appliance's token answer is larger than any token answer should be."""

    reason = Reason.TOKEN_ANSWER_UNREADABLE


def _same_path(target: RequestTarget, path: tuple[str | None, ...], case_insensitive: bool) -> bool:
    """Exactly the configured path (case-insensitively for packs that say so), decoded as policies see it."""
    if not case_insensitive:
        return target.segments == path
    return len(target.segments) == len(path) and all(
        fold_segment(s, True) == fold_segment(p or "", True) for s, p in zip(target.segments, path)
    )


def is_token_request(source: ObserveSource, method: str, target: RequestTarget, case_insensitive: bool) -> bool:
    """POST to the token endpoint, written with or without its trailing slash."""
    return method == "POST" and any(_same_path(target, path, case_insensitive) for path in source.token_endpoint_spellings)


def is_revoke_request(source: ObserveSource, method: str, target: RequestTarget, case_insensitive: bool) -> bool:
    revoke = source.settings.revoke_endpoint
    return revoke is not None and method == revoke.method and _same_path(target, revoke.segments, case_insensitive)


async def pass_token_request(forwarder: Forwarder, routed: Routed, source: ObserveSource) -> web.StreamResponse:
    """Forward a token request and learn the token its answer carries."""
    runtime, request, exchange, recorder = routed.runtime, routed.request, routed.exchange, forwarder.recorder
    if routed.target.raw_query is not None:
        # Some servers merge query and body parameters: a grant_type in the
        # query could be the one the appliance reads while labgate read the body's.
        return recorder.refuse(exchange, Reason.BAD_TOKEN_REQUEST, "token request parameters go in the body, not the query")
    try:
        body = b"".join([chunk async for chunk in forwarder.request_body(request, MAX_TOKEN_REQUEST_BYTES)])
    except ClientBodyError as exc:
        if exc.reason is Reason.BODY_TOO_LARGE:
            return recorder.refuse(exchange, Reason.BODY_TOO_LARGE, "a token request is a small form")
        return recorder.refuse(exchange, exc.reason, "the token request body could not be read")
    try:
        token_request = read_token_request(
            body, request.headers.get("Content-Type", ""), basic_client_id(request.headers.get("Authorization"))
        )
        granted = await source.granted_as(token_request)
    except BadTokenRequest as exc:
        return recorder.refuse(exchange, Reason.BAD_TOKEN_REQUEST, str(exc))
    except StoreUnavailable:
        return recorder.refuse(exchange, Reason.STORE_UNAVAILABLE, "token state cannot be recorded right now")
    if granted is None or granted.token_type not in runtime.pack.token_types:
        return recorder.refuse(exchange, Reason.GRANT_NOT_ALLOWED, "this grant yields no token type this upstream allows")
    decision = Decision(True, Reason.ALLOWED, f"{runtime.pack.name}/token_source/token_endpoint", granted.token_type)
    try:
        client_auth = _client_authentication(request.headers.get("Authorization"))
        outbound = forwarder.outbound(routed, once(body), client_auth, len(body))
        answer = await runtime.transport.send(outbound)
        try:
            status, headers = answer.status, response_headers(answer.headers, exchange.request_id)
            content = await _read_small(answer)
        finally:
            answer.release()
    except UpstreamError as exc:
        return recorder.upstream_failed(exchange, runtime, exc.reason, exc.detail, decision)
    except ClientBodyError as exc:
        return recorder.refuse(exchange, exc.reason, exc.detail, allowed=decision)
    except AnswerTooLarge:
        return recorder.refuse(exchange, Reason.TOKEN_ANSWER_UNREADABLE, "the appliance's token answer is too large", allowed=decision)
    if status == 200:
        try:
            issued = read_token_answer(content)
            await source.remember(granted, issued)
        except StoreUnavailable:
            return recorder.refuse(exchange, Reason.STORE_UNAVAILABLE, "the new token cannot be recorded right now", allowed=decision)
        except (ValueError, RecursionError):
            return recorder.refuse(
                exchange, Reason.TOKEN_ANSWER_UNREADABLE, "the appliance's token answer carries no token", allowed=decision
            )
    recorder.record(exchange, decision, status)
    return web.Response(status=status, body=content, headers=headers)


async def pass_revoke_request(
    forwarder: Forwarder, routed: Routed, source: ObserveSource, facts: TokenFacts
) -> web.StreamResponse:
    """A token may always end itself: forget it everywhere, then tell the appliance.

    Forgotten first, so that a failure on the way to the appliance can never
    leave the token alive in labgate.
    """
    exchange = routed.exchange
    presented = exchange.client_token
    assert isinstance(presented, ClientToken)  # facts exist only for a well-formed token
    try:
        await source.forget(presented.token, facts)
    except StoreUnavailable:
        return forwarder.recorder.refuse(exchange, Reason.STORE_UNAVAILABLE, "the token cannot be revoked right now")
    decision = Decision(True, Reason.ALLOWED, f"{routed.runtime.pack.name}/token_source/revoke_endpoint", facts.token_type)
    return await forwarder.forward(routed, decision)


def _client_authentication(value: str | None) -> tuple[str, str] | None:
    """The token request's own client authentication (RFC 6749 section 2.3.1), written anew.

    SimpliVity's token endpoint wants HTTP Basic for its client ``simplivity``; only a
    well-formed Basic credential is re-emitted, never a bearer token or anything else.
    """
    if value is None:
        return None
    scheme, _, encoded = value.strip().partition(" ")
    encoded = encoded.strip()
    if scheme.lower() != "basic" or not encoded:
        return None
    try:
        pair = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        return None
    if b":" not in pair:
        return None
    return "Authorization", "Basic " + base64.b64encode(pair).decode("ascii")


async def _read_small(answer: UpstreamResponse) -> bytes:
    """The whole answer, refusing anything larger than a token answer can sensibly be."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in answer.body():
        size += len(chunk)
        if size > MAX_TOKEN_ANSWER_BYTES:
            raise AnswerTooLarge()
        chunks.append(chunk)
    return b"".join(chunks)
