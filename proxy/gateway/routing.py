"""Which upstream a request goes to: by ``Host``, by path prefix, or both.

The most specific upstream wins: a matching host beats none, then the longest
matching prefix.  No match is a 404 from labgate, never a guess.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

from proxy.config import Upstream
from proxy.paths import RequestTarget

T = TypeVar("T")


def host_without_port(host_header: str | None) -> str | None:
    if not host_header:
        return None
    host = host_header.strip().lower()
    if host.startswith("["):
        return host.split("]", 1)[0] + "]"
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class UpstreamRouter(Generic[T]):
    """Routes to a per-upstream value (the runtime state of that upstream)."""

    def __init__(self, routes: Sequence[tuple[Upstream, T]]) -> None:
        # Most specific first: host given, then longer prefix.
        self._routes = sorted(
            routes, key=lambda r: (r[0].host is None, -len(r[0].path_prefix or ""))
        )

    def route(self, host_header: str | None, target: RequestTarget) -> tuple[Upstream, T, RequestTarget] | None:
        host = host_without_port(host_header)
        for upstream, value in self._routes:
            if upstream.host is not None and upstream.host != host:
                continue
            if upstream.path_prefix is None:
                return upstream, value, target
            stripped = target.strip_prefix(upstream.path_prefix)
            if stripped is not None:
                return upstream, value, stripped
        return None
