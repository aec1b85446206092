"""Reading a small request body whole: a token form, a management API call.

``StreamReader.read(n)`` returns what has arrived, not ``n`` bytes: a body
sent in several pieces must be read until its end, and refused once it is
larger than it can sensibly be.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

from proxy.gateway.errors import BodyTooLarge


async def read_small_body(request: web.BaseRequest, limit: int, timeout: float) -> bytes:
    """The whole body; BodyTooLarge past ``limit`` bytes, asyncio.TimeoutError when a piece takes over ``timeout``."""
    if request.content_length is not None and request.content_length > limit:
        raise BodyTooLarge()
    chunks: list[bytes] = []
    size = 0
    while True:
        async with asyncio.timeout(timeout):
            chunk = await request.content.readany()
        if not chunk:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge()
        chunks.append(chunk)
