"""A mock Hitachi Content Platform for cloud scale management API, faithful to what clients see.

What it mirrors (HCP for cloud scale "Access and authentication", the HCP for cloud scale Management API reference):

* ``POST /auth/oauth/`` (also without the trailing slash, as the vendor document writes
  it): form ``grant_type=password``, ``username``, ``password``, ``scope=*``,
  ``client_id``, ``client_secret`` and ``realm``.  A realm that is omitted or
  ``Local`` (any letter case: the vendor document's own example sends ``realm=local``)
  means the local admin account; other realms come from
  :class:`HcpAccounts`.  The answer is ``{"access_token": "eyJ…",
  "expires_in": 7200, "refresh_token": …}``: the access token is a JWT only
  the system can check (its key is not published), so to labgate it is opaque.
* refresh tokens: ``grant_type=refresh_token`` with ``refresh_token``,
  ``client_id`` and ``client_secret`` (RFC 6749 section 6; the sources do not
  show HCP's refresh request, so this is the standard form).  A refresh hands
  out a new access token and a new refresh token; the used refresh token dies
  (rotation), the access token it came with lives on until it expires.
* OAuth 2.0 error bodies (RFC 6749 section 5.2): 400 ``invalid_request``,
  ``unsupported_grant_type``, ``invalid_scope``, ``invalid_grant``; 401
  ``invalid_client`` when client credentials are checked and wrong.
* a bearer token on everything else: ``GET /api/admin/setup`` (the security
  realms), and the Object Storage MAPI, ``POST /mapi/v1/<area>/<verb>`` with
  its parameters in a JSON body (any other method is 405): ``user/list``
  (``count`` at most 1000, ``startingFrom``, ``nameFilter``),
  ``storage_component/list`` and ``user/revoke_tokens`` ``{"id": <user id>}``,
  which ends every token of that user.

Not in the sources, chosen here: the shapes of the 401 body (Spring OAuth2:
``{"error": "invalid_token", "error_description"}``), of the MAPI error body
(``{"statusCode", "errorMessage"}``), of ``/api/admin/setup``
(``{"realms": [{"id", "name", "type"}]}``) and of a ``user/list`` entry;
``token_type: "Bearer"`` in the token answer (RFC 6749 requires it); that
``startingFrom`` is the id of the first user listed; and that any non-empty
client id and secret are accepted unless :class:`HcpAccounts` lists clients
(the vendor document's examples use two different made-up pairs).
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web

from proxy.mocks.recording import bearer_of, recording_middleware

LOCAL_REALM = "Local"
DEFAULT_EXPIRES_IN = 7200  # HCP for cloud scale "Access and authentication"; another source says 5 hours: a constructor parameter
MAX_LIST_COUNT = 1000
FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class HcpUser:
    """An account that can get tokens: the local admin (realm Local) or a user of a security realm."""

    username: str
    password: str
    realm: str
    id: str = field(default_factory=lambda: str(uuid.uuid4()))


@dataclass
class HcpAccounts:
    """Who may log in, and (optionally) which OAuth clients the system knows."""

    local_admin: tuple[str, str] = ("admin", "admin-pw")
    realms: dict[str, dict[str, str]] = field(default_factory=lambda: {"marketingUsers": {"user1": "password1"}})
    clients: dict[str, str] | None = None  # client_id -> client_secret; None: any non-empty pair

    def users(self) -> list[HcpUser]:
        admin = HcpUser(self.local_admin[0], self.local_admin[1], LOCAL_REALM)
        return [admin] + [HcpUser(name, pw, realm) for realm, users in self.realms.items() for name, pw in users.items()]


@dataclass
class _Access:
    user: HcpUser
    expires_at: float


@dataclass
class _Refresh:
    user: HcpUser
    client_id: str


class HcpAppliance:
    """The mock's state; ``app()`` builds the aiohttp application serving it."""

    def __init__(
        self,
        accounts: HcpAccounts | None = None,
        *,
        expires_in: int = DEFAULT_EXPIRES_IN,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.accounts = accounts or HcpAccounts()
        self.users = self.accounts.users()
        self.expires_in = expires_in
        self.clock = clock
        self.access: dict[str, _Access] = {}
        self.refresh: dict[str, _Refresh] = {}
        self.received: list[tuple[str, str]] = []  # (method, raw path with query) of every request
        self._signing_secret = secrets.token_bytes(64)  # never published: the token is opaque outside HCP
        self.storage_components = [_storage_component(i) for i in range(2)]
        self._mapi: dict[tuple[str, str], Callable[[HcpUser, dict[str, Any]], Awaitable[web.Response]]] = {
            ("user", "list"): self._user_list,
            ("user", "revoke_tokens"): self._revoke_tokens,
            ("storage_component", "list"): self._storage_component_list,
        }

    def app(self) -> web.Application:
        app = web.Application(middlewares=[recording_middleware(self.received)])
        app.router.add_post("/auth/oauth/", self._token)
        app.router.add_post("/auth/oauth", self._token)
        app.router.add_get("/api/admin/setup", self._setup)
        app.router.add_route("*", "/mapi/v1/{area}/{verb}", self._mapi_call)
        return app

    def user(self, username: str, realm: str = LOCAL_REALM) -> HcpUser:
        """The account of this name in this realm (for tests that need its id)."""
        return next(u for u in self.users if u.username == username and u.realm == realm)

    # -- the token endpoint -----------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        if request.content_type != FORM:
            return _oauth_error(400, "invalid_request", "The request must be application/x-www-form-urlencoded")
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        grant = form.get("grant_type")
        if not grant:
            return _oauth_error(400, "invalid_request", "Missing grant type")
        if grant not in ("password", "refresh_token"):
            return _oauth_error(400, "unsupported_grant_type", f"Unsupported grant type: {grant[:64]}")
        client = form.get("client_id", "")
        if not client or not form.get("client_secret"):
            return _oauth_error(400, "invalid_request", "client_id and client_secret are required")
        if self.accounts.clients is not None and self.accounts.clients.get(client) != form.get("client_secret"):
            return _oauth_error(401, "invalid_client", "Bad client credentials")
        if grant == "refresh_token":
            return self._refresh_grant(form, client)
        return self._password_grant(form, client)

    def _password_grant(self, form: Mapping[str, str], client: str) -> web.Response:
        if not form.get("username") or "password" not in form:
            return _oauth_error(400, "invalid_request", "username and password are required")
        if form.get("scope") != "*":
            return _oauth_error(400, "invalid_scope", "Invalid scope: use scope=*")
        realm = form.get("realm") or LOCAL_REALM
        if realm.casefold() == LOCAL_REALM.casefold():
            realm = LOCAL_REALM
        user = next((u for u in self.users if u.realm == realm and u.username == form["username"]), None)
        if user is None or not secrets.compare_digest(user.password.encode(), form["password"].encode()):
            return _oauth_error(400, "invalid_grant", "Bad credentials")
        return self._issue(user, client)

    def _refresh_grant(self, form: Mapping[str, str], client: str) -> web.Response:
        presented = form.get("refresh_token")
        if not presented:
            return _oauth_error(400, "invalid_request", "Missing refresh_token")
        found = self.refresh.get(presented)
        if found is None or found.client_id != client:
            return _oauth_error(400, "invalid_grant", "Invalid refresh token")
        del self.refresh[presented]  # rotation: a refresh token is good once
        return self._issue(found.user, client)

    def _issue(self, user: HcpUser, client: str) -> web.Response:
        now = self.clock()
        claims = {"sub": user.id, "user_name": user.username, "realm": user.realm, "client_id": client,
                  "iat": int(now), "exp": int(now + self.expires_in), "jti": str(uuid.uuid4())}
        access = jwt.encode(claims, self._signing_secret, algorithm="HS256")
        refresh = secrets.token_urlsafe(32)
        self.access[access] = _Access(user, now + self.expires_in)
        self.refresh[refresh] = _Refresh(user, client)
        body = {"access_token": access, "token_type": "Bearer", "expires_in": self.expires_in, "refresh_token": refresh}
        return web.json_response(body, headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    # -- bearer-authenticated calls ---------------------------------------------

    def _caller(self, request: web.Request) -> HcpUser | web.Response:
        token = bearer_of(request)
        if token is None:
            return _unauthorized("unauthorized", "Full authentication is required to access this resource")
        found = self.access.get(token)
        if found is None:
            return _unauthorized("invalid_token", "Invalid access token")
        if self.clock() >= found.expires_at:
            del self.access[token]
            return _unauthorized("invalid_token", "Access token expired")
        return found.user

    async def _setup(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        if isinstance(caller, web.Response):
            return caller
        realms = [{"id": "local", "name": LOCAL_REALM, "type": "LOCAL"}]
        realms += [{"id": name.lower(), "name": name, "type": "LDAP"} for name in self.accounts.realms]
        return web.json_response({"realms": realms})

    async def _mapi_call(self, request: web.Request) -> web.Response:
        if request.method != "POST":
            # The Object Storage MAPI takes every call as a POST.
            return _mapi_error(405, f"Request method '{request.method}' not supported", headers={"Allow": "POST"})
        caller = self._caller(request)
        if isinstance(caller, web.Response):
            return caller
        method = self._mapi.get((request.match_info["area"], request.match_info["verb"]))
        if method is None:
            return _mapi_error(404, f"No such method: {request.match_info['area']}/{request.match_info['verb']}")
        raw = await request.read()
        if not raw.strip():
            params: Any = {}
        else:
            try:
                params = await request.json()
            except ValueError:
                return _mapi_error(400, "The request body is not valid JSON")
        if not isinstance(params, dict):
            return _mapi_error(400, "The request body must be a JSON object")
        return await method(caller, params)

    async def _user_list(self, caller: HcpUser, params: dict[str, Any]) -> web.Response:
        count = params.get("count", MAX_LIST_COUNT)
        if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= MAX_LIST_COUNT:
            return _mapi_error(400, f"count must be between 1 and {MAX_LIST_COUNT}")
        name_filter = params.get("nameFilter")
        if name_filter is not None and not isinstance(name_filter, str):
            return _mapi_error(400, "nameFilter must be a string")
        users = sorted(self.users, key=lambda u: u.id)
        if name_filter:
            users = [u for u in users if name_filter.casefold() in u.username.casefold()]
        start = params.get("startingFrom")
        if start is not None:
            users = [u for u in users if u.id >= str(start)]
        return web.json_response([_user_entry(u) for u in users[:count]])

    async def _storage_component_list(self, caller: HcpUser, params: dict[str, Any]) -> web.Response:
        return web.json_response(self.storage_components)

    async def _revoke_tokens(self, caller: HcpUser, params: dict[str, Any]) -> web.Response:
        user_id = params.get("id")
        if not isinstance(user_id, str) or not user_id:
            return _mapi_error(400, "id is required")
        if not any(u.id == user_id for u in self.users):
            return _mapi_error(404, "No such user")
        self.access = {t: a for t, a in self.access.items() if a.user.id != user_id}
        self.refresh = {t: r for t, r in self.refresh.items() if r.user.id != user_id}
        return web.Response(status=200)


def _oauth_error(status: int, error: str, description: str) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status,
                             headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


def _unauthorized(error: str, description: str) -> web.Response:
    return web.json_response(
        {"error": error, "error_description": description},
        status=401,
        headers={"WWW-Authenticate": f'Bearer realm="hcpcs", error="{error}", error_description="{description}"'},
    )


def _mapi_error(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"statusCode": status, "errorMessage": message}, status=status, headers=headers)


def _user_entry(user: HcpUser) -> dict[str, Any]:
    return {"id": user.id, "username": user.username, "displayName": user.username, "realmName": user.realm}


def _storage_component(i: int) -> dict[str, Any]:
    return {
        "id": str(uuid.UUID(int=i + 1)),
        "storageType": "AMAZON_S3",
        "storageComponentConfig": {
            "label": f"pool-{i}",
            "host": f"s3-{i}.lab.local",
            "https": True,
            "port": 443,
            "bucket": f"hcpcs-backend-{i}",
            "region": "us-east-1",
            "authType": "V4",
            "state": "ACTIVE",
        },
    }
