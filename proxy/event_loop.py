"""The event loop labgate serves on: uvloop where it is installed, asyncio's own otherwise.

uvloop (libuv under asyncio's interface) runs the same coroutines with far
less CPU per socket event, callback and task: on the benchmark's request path
the event loop and socket calls are a large share of every request.  It is a
dependency on Linux; elsewhere, or with ``LABGATE_EVENT_LOOP=asyncio`` (to rule
it out when chasing a problem), asyncio's default loop serves, with the same
behaviour and more CPU per request.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")
ENV = "LABGATE_EVENT_LOOP"


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop constructor, or None for asyncio's default (not installed, or turned off)."""
    if os.environ.get(ENV, "").strip().lower() == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def loop_name() -> str:
    """``uvloop`` or ``asyncio``: what :func:`run` will use (for the start-up log line)."""
    return "asyncio" if loop_factory() is None else "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the chosen loop."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
