"""Shared parts of the tests that put labgate's token service in front of the mock appliances.

labgate forwards to a mock with a credential of its own; these parts let a test
see which ``Authorization`` each request reached the mock with, and run every
test on both upstream transports.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler

from tests.conftest import RunningGateway


def noting_authorization(app: web.Application, seen: list[str | None]) -> web.Application:
    """``app``, also appending the ``Authorization`` header of every request it serves to ``seen``."""

    @web.middleware
    async def note(request: web.Request, handler: Handler) -> web.StreamResponse:
        seen.append(request.headers.get("Authorization"))
        return await handler(request)

    app.middlewares.append(note)
    return app


@pytest.fixture(params=["http1", "aiohttp"])
def transport(request: pytest.FixtureRequest) -> str:
    """The upstream transport: every test through labgate runs on both."""
    return str(request.param)


async def through_labgate(
    running: RunningGateway, method: str, path: str, token: str, *, headers: dict[str, str] | None = None, body: Any = None
) -> tuple[int, Any]:
    """A request through labgate to an upstream with a bearer token; the status and the JSON body (None when empty)."""
    sent = {"Authorization": f"Bearer {token}", **(headers or {})}
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"{running.url}{path}", headers=sent, json=body) as answer:
            text = await answer.text()
            return answer.status, (await answer.json(content_type=None)) if text else None


async def direct(url: str, method: str, path: str, token: str, *, body: Any = None) -> tuple[int, Any]:
    """A request straight to the mock appliance, as labgate's credential would make it."""
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"{url}{path}", headers={"Authorization": f"Bearer {token}"}, json=body) as answer:
            text = await answer.text()
            return answer.status, (await answer.json(content_type=None)) if text else None
