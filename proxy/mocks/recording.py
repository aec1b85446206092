"""What every mock appliance keeps about the requests that reached it.

Tests through labgate prove that a refused request was never forwarded by
looking at what the appliance received: each mock appends ``(method, raw path
with query)`` for every request, before any of its own checks.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware


def recording_middleware(received: list[tuple[str, str]]) -> Middleware:
    """A middleware appending every request's method and raw target to ``received``."""

    @web.middleware
    async def record(request: web.Request, handler: Handler) -> web.StreamResponse:
        received.append((request.method, request.raw_path))
        return await handler(request)

    return record


def bearer_of(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer`` header (any letter case of the scheme), or None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return (token.strip() or None) if scheme.lower() == "bearer" else None
