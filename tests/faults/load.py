"""Requests from outside, each answer kept with when it came and how long it took."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import aiohttp

from tests.conftest import mint


@dataclass(frozen=True)
class Answer:
    """One request's outcome: ``status`` 0 when the connection failed without an answer."""

    status: int
    reason: str | None
    sent_at: float  # time.monotonic()
    seconds: float
    label: str = ""


def fresh_token(role: str = "reader", **claims: Any) -> str:
    """A token labgate has never seen (its own jti): checking it needs the store."""
    return mint({"role": role, "jti": uuid.uuid4().hex, "sub": claims.pop("sub", f"user-{uuid.uuid4().hex[:8]}"), **claims})


async def ask(session: aiohttp.ClientSession, url: str, token: str | None, *, label: str = "", timeout: float = 30) -> Answer:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    sent = time.monotonic()
    try:
        async with session.get(url, headers=headers, timeout=aiohttp.ClientTimeout(total=timeout)) as response:
            body = await response.json(content_type=None) if response.status != 200 else None
            reason = body.get("reason") if isinstance(body, dict) else None
            return Answer(response.status, reason, sent, time.monotonic() - sent, label)
    except (TimeoutError, aiohttp.ClientError):
        return Answer(0, None, sent, time.monotonic() - sent, label)


def session(limit: int = 100) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=limit))


def summary(answers: list[Answer]) -> dict[tuple[int, str | None], int]:
    """How many of each (status, reason): what a failing assertion prints."""
    counts: dict[tuple[int, str | None], int] = {}
    for answer in answers:
        counts[(answer.status, answer.reason)] = counts.get((answer.status, answer.reason), 0) + 1
    return counts
