"""The management API's router and call types: what every resource module registers against.

Routes are templates like ``/subjects/{name}``: a ``{param}`` is exactly one
decoded path segment of :data:`PARAM_VALUE` characters, so no ``..``, no
encoded ``/``, nothing a handler could misread.  Answers are JSON with
``Cache-Control: no-store``; errors have labgate's usual body.  The resources
import this module, never :mod:`~proxy.gateway.token_service.admin.api`, which
lists them: no import runs in a circle.
"""


from __future__ import annotations

import contextlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import aiohttp
from aiohttp import web

from proxy.errors import LabgateError
from proxy.gateway.errors import BodyTooLarge
from proxy.gateway.token_service.small_body import read_small_body
from proxy.issuer.directory import DirectoryError
from proxy.issuer.records import NAME
from proxy.reasons import Reason
from proxy.strict_json import no_duplicate_names

if TYPE_CHECKING:
    from proxy.config import Config
    from proxy.issuer.ring import KeyRing
    from proxy.store.base import Store
    from proxy.tokens.state import TokenStateGuard

logger = logging.getLogger("labgate")

ADMIN_REALM = "labgate-admin"
AUTH_CACHE_SECONDS = 10.0
AUTH_CACHE_SIZE = 256
MAX_ADMIN_BODY_BYTES = 64 * 1024
# A {param}: a name as records have them (letters, digits and . _ @ + -; an e-mail-like subject fits).
PARAM_VALUE = NAME
_PARAM_TEMPLATE = re.compile(r"\{([a-z_]+)\}")


class AdminError(LabgateError):
    """A refusal a handler raises; the router answers it as JSON.  ``detail`` never quotes a secret."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail, reason)


@dataclass(frozen=True)
class AdminContext:
    """What every handler may use: the running config version's parts."""

    config: Config
    store: Store
    key_ring: KeyRing
    token_state: TokenStateGuard
    clock: Callable[[], float] = time.time


@dataclass(frozen=True)
class AdminCall:
    """One authenticated request, routed: its path parameters and the context."""

    request: web.BaseRequest
    params: Mapping[str, str]
    request_id: str
    context: AdminContext

    async def json_body(self) -> dict[str, Any]:
        """The request's JSON object body (at most :data:`MAX_ADMIN_BODY_BYTES`); AdminError otherwise."""
        media_type = self.request.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if media_type != "application/json":
            raise AdminError(Reason.BAD_ADMIN_REQUEST, "the body must be application/json")
        try:
            raw = await read_small_body(self.request, MAX_ADMIN_BODY_BYTES, self.context.config.limits.body_timeout)
        except BodyTooLarge:
            raise AdminError(Reason.BODY_TOO_LARGE, "an admin request body is a small JSON object") from None
        except (TimeoutError, aiohttp.ClientPayloadError, OSError):
            raise AdminError(Reason.BAD_ADMIN_REQUEST, "the request body could not be read") from None
        try:
            body = json.loads(raw, object_pairs_hook=no_duplicate_names)
        except (ValueError, RecursionError):
            raise AdminError(Reason.BAD_ADMIN_REQUEST, "the body is not a JSON object without duplicate keys") from None
        if not isinstance(body, dict):
            raise AdminError(Reason.BAD_ADMIN_REQUEST, "the body must be a JSON object")
        return body

    def answer(self, body: Any, status: int = 200) -> web.Response:
        return web.json_response(body, status=status, headers=self._headers())

    def no_content(self) -> web.Response:
        return web.Response(status=204, headers=self._headers())

    def _headers(self) -> dict[str, str]:
        # Answers may carry a secret shown once: no cache may keep it (RFC 9111 section 5.2.2.5).
        return {"Cache-Control": "no-store", "Pragma": "no-cache", "X-Request-ID": self.request_id}


def expect_fields(body: Mapping[str, Any], *, required: tuple[str, ...], optional: tuple[str, ...] = ()) -> None:
    """Exactly the known fields: a misspelt one is an error, never silently ignored."""
    unknown = sorted(set(body) - set(required) - set(optional))
    if unknown:
        raise AdminError(Reason.BAD_ADMIN_REQUEST, f"unknown field {unknown[0][:64]!r} (known: {', '.join(required + optional)})")
    missing = [name for name in required if body.get(name) is None]
    if missing:
        raise AdminError(Reason.BAD_ADMIN_REQUEST, f"missing field {missing[0]!r}")


_DIRECTORY_REASONS = {"invalid": Reason.BAD_ADMIN_REQUEST, "not_found": Reason.NOT_FOUND, "exists": Reason.ALREADY_EXISTS}


@contextlib.contextmanager
def directory_errors() -> Iterator[None]:
    """A directory refusal, as the management API answers it."""
    try:
        yield
    except DirectoryError as exc:
        raise AdminError(_DIRECTORY_REASONS[exc.kind], str(exc)) from None



Handler = Callable[[AdminCall], Awaitable[web.StreamResponse]]


@dataclass(frozen=True)
class _Route:
    method: str
    segments: tuple[str | None, ...]  # None: a parameter
    names: tuple[str, ...]
    handler: Handler


@dataclass
class AdminRouter:
    """Method + path template -> handler; templates match whole segments."""

    routes: list[_Route] = field(default_factory=list)

    def add(self, method: str, template: str, handler: Handler) -> None:
        segments: list[str | None] = []
        names: list[str] = []
        for part in template.strip("/").split("/") if template.strip("/") else []:
            found = _PARAM_TEMPLATE.fullmatch(part)
            if found:
                segments.append(None)
                names.append(found.group(1))
            elif PARAM_VALUE.fullmatch(part):
                segments.append(part)
            else:
                raise ValueError(f"admin route {template!r}: segment {part!r} is neither a name nor a whole {{param}}")
        route = _Route(method, tuple(segments), tuple(names), handler)
        if any(r.method == method and r.segments == route.segments for r in self.routes):
            raise ValueError(f"admin route {method} {template} is registered twice")
        self.routes.append(route)

    def resolve(self, method: str, segments: tuple[str, ...]) -> tuple[Handler, dict[str, str]]:
        """The handler and its parameters; AdminError 404 (no such path) or 405 (another method)."""
        path_matched = False
        for route in self.routes:
            params = _match(route, segments)
            if params is None:
                continue
            if route.method == method:
                return route.handler, params
            path_matched = True
        if path_matched:
            raise AdminError(Reason.ADMIN_METHOD_NOT_ALLOWED, f"method {method[:16]!r} is not allowed here")
        raise AdminError(Reason.NOT_FOUND, "no such management resource")


def _match(route: _Route, segments: tuple[str, ...]) -> dict[str, str] | None:
    if len(route.segments) != len(segments):
        return None
    values: list[str] = []
    for wanted, given in zip(route.segments, segments):
        if wanted is None:
            if not PARAM_VALUE.fullmatch(given):
                return None
            values.append(given)
        elif wanted != given:
            return None
    return dict(zip(route.names, values))


