"""Checks on a request's shape that come before any token or policy: what a body may say.

A body could otherwise carry what the query may not: a ``GET`` whose form or JSON
body says ``sort=name`` reaches an appliance that reads parameters from either
place, and ``_method=DELETE`` (in the query, or in a form body) turns an
allowed ``POST`` into a ``DELETE`` at appliances built on Rails, Laravel or
similar stacks.  So:

* ``GET``, ``HEAD``, ``DELETE`` and ``OPTIONS`` carry no body, unless the pack
  lists the route under ``bodies`` (400 ``body_not_allowed``);
* method overrides are refused wherever they can hide: a header in any spelling,
  ``_method`` in the query, and ``_method`` in a form body (400 ``method_override``).
"""

from __future__ import annotations

import email.message
import email.utils
import functools
from collections.abc import AsyncIterator
from urllib.parse import unquote_plus

from proxy.gateway.exchange import RoutePlan
from proxy.gateway.transport import ClientBodyError
from proxy.header_names import header_key, is_method_override
from proxy.paths import RequestTarget, normalize_query_name
from proxy.policy.compile import CompiledPack
from proxy.policy.decide import Decision, deny
from proxy.policy.model import BODILESS_METHODS
from proxy.reasons import Reason

OVERRIDE_PARAMETER = "_method"
# A urlencoded form is read whole before it is forwarded, to look for ``_method``.
MAX_FORM_BYTES = 1024 * 1024
# A multipart part's headers: anything longer is not a form a client means.
MAX_PART_HEADER_BYTES = 16 * 1024


def shape_problem(method: str, header_names: tuple[str, ...], has_body: bool, plan: RoutePlan) -> Decision | None:
    """The first thing wrong with the request's shape, or None.

    ``header_names``: the request's header names as sent, in order; ``plan``: what
    its method and target allow here (worked out once per target).
    """
    override = override_header(header_names)
    if override is not None:
        return deny(Reason.METHOD_OVERRIDE, f"method override headers ({override[:64]}) are not accepted")
    if plan.query_override:
        return deny(Reason.METHOD_OVERRIDE, "a _method query parameter (method override) is not accepted")
    if has_body and not plan.body_allowed:
        return deny(Reason.BODY_NOT_ALLOWED, f"a {method} request may not carry a body")
    return None


def body_allowed(method: str, target: RequestTarget, pack: CompiledPack) -> bool:
    """Whether a request may carry a body: any method but a bodiless one, which needs a ``bodies`` route."""
    return method not in BODILESS_METHODS or pack.bodies.match(method, target.segments).rule is not None


@functools.lru_cache(maxsize=2048)  # clients repeat the same few header sets; names are client-controlled, so bounded
def override_header(header_names: tuple[str, ...]) -> str | None:
    """The first header name that asks for a method override, in any spelling, or None."""
    for name in header_names:
        if is_method_override(header_key(name)):
            return name
    return None


def form_kind(content_type: str) -> str | None:
    """``urlencoded`` or ``multipart`` for the two HTML form encodings, else None."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media == "application/x-www-form-urlencoded":
        return "urlencoded"
    if media == "multipart/form-data":
        return "multipart"
    return None


def urlencoded_overrides(body: bytes) -> bool:
    """Whether a urlencoded form names ``_method`` (``&`` and the old ``;`` both separate fields)."""
    text = body.decode("latin-1").replace(";", "&")
    for pair in text.split("&"):
        name = unquote_plus(pair.partition("=")[0], encoding="utf-8", errors="replace")
        if normalize_query_name(name.strip()) == OVERRIDE_PARAMETER:
            return True
    return False


def multipart_boundary(content_type: str) -> bytes | None:
    message = email.message.Message()
    message["content-type"] = content_type
    boundary = message.get_param("boundary")
    if not isinstance(boundary, str) or not boundary or len(boundary) > 70:  # RFC 2046 section 5.1.1
        return None
    return boundary.encode("latin-1", "replace")


class FormOverride(ClientBodyError):
    """A form body named ``_method``, or could not be read as a form: the client's fault, never the appliance's."""


async def without_multipart_override(body: AsyncIterator[bytes], boundary: bytes) -> AsyncIterator[bytes]:
    """Stream a multipart body on, raising FormOverride before any chunk holding a ``_method`` part.

    The appliance then holds an unfinished request, which it never acts on: the
    connection to it is closed.
    """
    scanner = _PartNames(boundary)
    async for chunk in body:
        for name in scanner.feed(chunk):
            if normalize_query_name(name.strip()) == OVERRIDE_PARAMETER:
                raise FormOverride(Reason.METHOD_OVERRIDE, "a _method form field (method override) is not accepted")
        yield chunk


class _PartNames:
    """The ``name`` of each multipart part as its headers arrive, across chunk boundaries."""

    def __init__(self, boundary: bytes) -> None:
        self._delimiter = b"\r\n--" + boundary
        self._buffer = b"\r\n"  # the first delimiter has no CRLF before it
        self._in_headers = False

    def feed(self, chunk: bytes) -> list[str]:
        self._buffer += chunk
        names: list[str] = []
        while True:
            if self._in_headers:
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buffer) > MAX_PART_HEADER_BYTES:
                        raise FormOverride(Reason.BAD_REQUEST, "a multipart part's headers are too large")
                    return names
                names.extend(_disposition_names(self._buffer[:end]))
                self._buffer, self._in_headers = self._buffer[end + 4 :], False
            else:
                found = self._buffer.find(self._delimiter)
                if found < 0:
                    self._buffer = self._buffer[-(len(self._delimiter) - 1) :]
                    return names
                self._buffer, self._in_headers = self._buffer[found + len(self._delimiter) :], True


def _disposition_names(block: bytes) -> list[str]:
    names = []
    for line in block.split(b"\r\n"):
        field, colon, value = line.partition(b":")
        if colon and field.strip().lower() == b"content-disposition":
            message = email.message.Message()
            message["content-disposition"] = value.decode("latin-1").strip()
            name = message.get_param("name", header="content-disposition")
            if isinstance(name, tuple):  # RFC 2231 encoded
                name = email.utils.collapse_rfc2231_value(name)
            if isinstance(name, str):
                names.append(name)
    return names
