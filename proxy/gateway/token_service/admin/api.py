"""The token service's management API: administrator authentication and a small router.

Mounted under ``issuer.admin.prefix`` (default ``/-/admin``) on the main
listener, outside every policy.  Each resource lives in its own module and
adds its routes with one call (:func:`_resources`); the router and call types are
:mod:`~proxy.gateway.token_service.admin.router`.

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
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from collections.abc import Callable

from aiohttp import web
from cachetools import TTLCache

from proxy.gateway.errors import error_response
from proxy.gateway.token_service.admin import (
    account_allowlists,
    clients,
    emergency_clients,
    service_accounts,
    subjects,
)
from proxy.gateway.token_service.admin.router import (
    ADMIN_REALM,
    AUTH_CACHE_SECONDS,
    AUTH_CACHE_SIZE,
    AdminCall,
    AdminContext,
    AdminError,
    AdminRouter,
)
from proxy.issuer.accounts import AdminSettings
from proxy.issuer.secrets_hash import verify_secret_async
from proxy.paths import TargetError, parse_target
from proxy.reasons import Reason
from proxy.store.base import StoreUnavailable

logger = logging.getLogger("labgate")


def _resources() -> tuple[Callable[[AdminRouter], None], ...]:
    """Every resource module's ``register``: one line each."""
    return (
        subjects.register,
        clients.register,
        emergency_clients.register,
        service_accounts.register,
        account_allowlists.register,
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
