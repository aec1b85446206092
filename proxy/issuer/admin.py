"""The token service's management API: administrator authentication and a small router.

Mounted under ``issuer.admin.prefix`` (default ``/-/admin``) on the main
listener, outside every policy.  Each resource lives in its own module and
adds its routes with one call (:data:`RESOURCES`).

Authentication is the administrator credential from the config, by HTTP
Basic, and nothing else:

* a Bearer token — above all a labgate-issued access token — is refused with
  403 ``token_management_forbidden`` (Commvault forbids managing tokens with
  a token: a leaked token must not mint more);
* no or wrong credentials: 401 ``admin_unauthorized`` with
  ``WWW-Authenticate: Basic realm="labgate-admin"``.

Checking the scrypt hash costs tens of milliseconds, so the outcome for an
``Authorization`` value is remembered (by its sha256, never the value) for
:data:`AUTH_CACHE_SECONDS`, a bounded number of values: a client repeating
its header costs one hash, not one per request.

Routes are templates like ``/subjects/{name}``: a ``{param}`` is exactly one
decoded path segment of :data:`PARAM_VALUE` characters, so no ``..``, no
encoded ``/``, nothing a handler could misread.  Answers are JSON with
``Cache-Control: no-store``; errors have labgate's usual body.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import hmac
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Awaitable, Callable, Iterator, Mapping

import aiohttp
from aiohttp import web
from cachetools import TTLCache

from proxy.errors import LabgateError
from proxy.gateway.errors import BodyTooLarge, error_response
from proxy.gateway.token_service.small_body import read_small_body
from proxy.issuer.accounts import AdminSettings
from proxy.issuer.directory import DirectoryError
from proxy.issuer.records import NAME
from proxy.issuer.secrets_hash import verify_secret_async
from proxy.paths import TargetError, parse_target
from proxy.reasons import Reason
from proxy.store.base import StoreUnavailable

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
        except (asyncio.TimeoutError, aiohttp.ClientPayloadError, OSError):
            raise AdminError(Reason.BAD_ADMIN_REQUEST, "the request body could not be read") from None
        try:
            body = json.loads(raw, object_pairs_hook=_no_duplicate_keys)
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


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise ValueError("duplicate key")
        result[key] = value
    return result


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


def _resources() -> tuple[Callable[[AdminRouter], None], ...]:
    """Every resource module's ``register``: one line each."""
    from proxy.issuer import (
        admin_account_allowlists,
        admin_clients,
        admin_emergency_clients,
        admin_service_accounts,
        admin_subjects,
    )

    return (
        admin_subjects.register,
        admin_clients.register,
        admin_emergency_clients.register,
        admin_service_accounts.register,
        admin_account_allowlists.register,
    )


class AdminApi:
    """The management API of one config version."""

    def __init__(self, settings: AdminSettings, context: AdminContext, router: AdminRouter | None = None) -> None:
        self.settings = settings
        self.context = context
        self.prefix_segments = tuple(s for s in settings.prefix.split("/") if s)
        if router is None:
            router = AdminRouter()
            for register in _resources():
                register(router)
        self.router = router
        # sha256(Authorization value) -> whether it is the administrator's: bounded, short-lived.
        self._verified: TTLCache[bytes, bool] = TTLCache(maxsize=AUTH_CACHE_SIZE, ttl=AUTH_CACHE_SECONDS)

    def owns(self, raw_path: str) -> bool:
        """Whether the raw path is the prefix or below it (whole segments)."""
        prefix = self.settings.prefix
        return raw_path == prefix or raw_path.startswith(prefix + "/") or raw_path.startswith(prefix + "?")

    async def handle(self, request: web.BaseRequest, request_id: str) -> web.StreamResponse:
        try:
            await self._authenticate(request)
            target = parse_target(request.raw_path)
            if target.raw_query is not None:
                raise AdminError(Reason.BAD_ADMIN_REQUEST, "the management API takes no query parameters")
            segments = target.segments[len(self.prefix_segments):]
            if segments and segments[-1] == "":
                segments = segments[:-1]  # a trailing slash names the same resource
            handler, params = self.router.resolve(request.method, segments)
            return await handler(AdminCall(request, params, request_id, self.context))
        except AdminError as exc:
            return self._error(exc.reason, exc.detail, request_id)
        except TargetError as exc:
            return self._error(exc.reason, exc.detail, request_id)
        except StoreUnavailable as exc:
            logger.warning("management API: %s", exc)
            return self._error(Reason.STORE_UNAVAILABLE, "the store cannot be reached right now", request_id)

    def _error(self, reason: Reason, detail: str, request_id: str) -> web.Response:
        response = error_response(reason, detail, request_id)
        response.headers["Pragma"] = "no-cache"
        if reason is Reason.ADMIN_UNAUTHORIZED:
            response.headers["WWW-Authenticate"] = f'Basic realm="{ADMIN_REALM}", charset="UTF-8"'
        if reason is Reason.BODY_TOO_LARGE:
            response.force_close()  # the rest of the body is never read
        return response

    async def _authenticate(self, request: web.BaseRequest) -> None:
        given = request.headers.getall("Authorization", ())
        if len(given) != 1:
            raise AdminError(Reason.ADMIN_UNAUTHORIZED, "the management API needs the administrator's HTTP Basic credentials")
        value = given[0]
        scheme, _, credentials = value.strip().partition(" ")
        if scheme.lower() == "bearer":
            raise AdminError(
                Reason.TOKEN_MANAGEMENT_FORBIDDEN, "tokens cannot manage tokens: use the administrator's credentials"
            )
        if scheme.lower() != "basic" or not await self._is_admin(value, credentials.strip()):
            raise AdminError(Reason.ADMIN_UNAUTHORIZED, "wrong or missing administrator credentials")

    async def _is_admin(self, header: str, credentials: str) -> bool:
        key = hashlib.sha256(header.encode("utf-8", "surrogateescape")).digest()
        known = self._verified.get(key)
        if known is not None:
            return known
        username, password = _basic(credentials)
        user_ok = username is not None and hmac.compare_digest(
            username.encode("utf-8", "surrogateescape"), self.settings.username.encode()
        )
        # The hash is checked whatever the username: a wrong name costs as much as a wrong password.
        password_ok = await verify_secret_async(password or "", self.settings.password_hash)
        verdict = bool(user_ok and password_ok)
        self._verified[key] = verdict
        if not verdict:
            logger.warning("management API: administrator credentials refused")  # never the name or password
        return verdict


def _basic(credentials: str) -> tuple[str | None, str | None]:
    """RFC 7617 user-id and password (UTF-8); (None, None) when unreadable."""
    try:
        decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None, None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else (None, None)
