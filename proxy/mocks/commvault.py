"""A mock Commvault REST API (Command Center / web console), faithful to what clients see.

What it mirrors (Commvault's documentation, 'Creating an access token for a service
account' and its REST API reference; cvpysdk's source for what the SDK reads):

* ``POST <base>/Login`` ``{"username", "password": <base64>}`` →
  ``{"token": "QSDK …", "userName", …}``, sent back as ``Authtoken: QSDK …``;
  a login lives 30 minutes from its last use; ``POST /RenewLoginToken``
  ``{"sessionId"}`` swaps it for a new one, ``POST /Logout`` ends it.  Wrong
  credentials answer 200 with ``errList`` (what cvpysdk reads).
* service-account access tokens (:mod:`proxy.mocks.commvault_tokens`):
  ``POST /V4/AccessToken`` → ``{"tokenInfo": {accessTokenId, tokenName,
  accessToken, refreshToken, tokenExpiryTimestamp, refreshTokenExpiryTimestamp,
  renewableUntilTimestamp, userId}}``; ``PUT``/``DELETE /V4/AccessToken/{id}``;
  ``GET /V4/AccessToken/?userId=``; ``POST /V4/AccessToken/Renew``
  ``{"accessToken", "refreshToken"}``.  Access tokens are used as
  ``Authorization: Bearer`` (cvpysdk sends them as ``Authtoken: Bearer …``,
  which the mock takes too), within their scope (All; Custom entries read
  "starting with" as the documentation's ``/plans`` example has it;
  1-Touch's five endpoints; Hyperscale; SCIM: :mod:`proxy.mocks.commvault_scope`),
  from an address on the service account's IP allowlist if it has one, and
  never to create, edit or delete access tokens (the vendor's own rule).
* the resources cvpysdk lists when it connects with a token
  (:mod:`proxy.mocks.commvault_resources`): the unauthenticated ``GET <base>/``
  probe, ``POST /WhoAmI``, ``/Client`` (hidden and virtualization clients
  too), ``/VSAClientAndClientGroupList``, ``/ClientGroup``, ``/V4/ServerGroup``,
  ``/V2/Plan``, ``/V2/MediaAgents``, ``/MediaAgent``, ``/FirewallSummary`` and
  ``DELETE /Client/{id}``.  Paths are case-insensitive (``/client``,
  ``/v4/accesstoken/renew``) and a run of slashes reads as one (cvpysdk
  writes most URLs as ``<base>/`` + ``/V4/...``), under a base path (``/commandcenter/api`` by
  default; ``/webconsole/api`` on older installs).

Not in the sources, chosen here: the error body ``{"errorCode",
"errorMessage"}`` for 401, 403 and 404 and its texts, in particular the 403
``An access token cannot be used to create, edit or delete access tokens``
(the rule is the vendor's, the answer a guess); the ``errList`` code of a
failed login; that Renew is authenticated by the pair in its body alone (the
access token is usually expired by then); the list answer ``{"accessTokens":
[...]}``; the ``/MediaAgent`` (cvpysdk's ``response[].entityInfo``),
``/ClientGroup`` and ``/FirewallSummary`` entries; ``/scim`` as the SCIM
scope's paths; that the IP allowlist belongs to the service account (as the
vendor document's Command Center steps say).  SaaS rate limits (429) are not modelled.
"""

from __future__ import annotations

import base64
import binascii
import re
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from proxy.mocks.commvault_resources import Caller, Handler, ResourceHandlers
from proxy.mocks.commvault_scope import IpEntry, ip_allowed, ip_entry, scope_allows
from proxy.mocks.commvault_tokens import (
    ALL,
    DEFAULT_ACCESS_LIFETIME,
    AccessTokenBook,
    Refusal,
    TokenChain,
)
from proxy.mocks.recording import bearer_of, recording_middleware

LOGIN_IDLE = 30 * 60
ACCESS_TOKEN_ADMIN = "An access token cannot be used to create, edit or delete access tokens"
OUT_OF_SCOPE = "This access token's scope does not include this API"
_REPEATED_SLASHES = re.compile(r"/{2,}")


@dataclass
class _Login:
    username: str
    expires_at: float


class CommvaultAppliance:
    """The mock's state; ``app()`` builds the aiohttp application serving it."""

    def __init__(
        self,
        *,
        users: Mapping[str, str] | None = None,
        base_path: str = "/commandcenter/api",
        access_token_lifetime: float = DEFAULT_ACCESS_LIFETIME,
        trust_forwarded_for: bool = False,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.users = dict(users) if users is not None else {"admin": "admin-pw", "svc-backup": "svc-pw"}
        self.user_ids = {name: i for i, name in enumerate(self.users, start=1)}
        self.base_path = base_path.rstrip("/")
        self.trust_forwarded_for = trust_forwarded_for
        self.clock = clock
        self.tokens = AccessTokenBook(access_lifetime=access_token_lifetime, clock=clock)
        self.logins: dict[str, _Login] = {}
        self.ip_allowlists: dict[str, list[IpEntry]] = {}
        self.received: list[tuple[str, str]] = []  # (method, raw path with query) of every request
        self.resources = ResourceHandlers()
        self._routes: list[tuple[str, re.Pattern[str], Handler | None]] = [
            ("POST", re.compile(r"/v4/accesstoken/renew"), None),  # the pair in the body authenticates it
            ("POST", re.compile(r"/v4/accesstoken"), self._create_token),
            ("GET", re.compile(r"/v4/accesstoken/?"), self._list_tokens),
            ("PUT", re.compile(r"/v4/accesstoken/(\d+)"), self._edit_token),
            ("DELETE", re.compile(r"/v4/accesstoken/(\d+)"), self._delete_token),
            *self.resources.routes(),
        ]

    def add_standing_token(self, access: str, username: str = "admin") -> None:
        """An All-scope access token of ``username`` with a known value that never expires.

        What a gateway in front holds as its credential (labgate's ``credential:
        {type: bearer}``): the lab demo hands the same value to both sides.
        """
        chain = self.tokens.create(
            username, self.user_ids[username], {"tokenName": "gateway", "tokenType": ALL, "renewableUntilTimestamp": 0}
        )
        assert isinstance(chain, TokenChain)
        chain.access, chain.access_expires = access, float("inf")

    def app(self) -> web.Application:
        app = web.Application(middlewares=[recording_middleware(self.received)])
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    def set_ip_allowlist(self, username: str, entries: list[str]) -> None:
        """The service account may then be used only from these addresses, CIDRs and ranges ("a – b" or "a - b")."""
        self.ip_allowlists[username] = [ip_entry(e) for e in entries]

    # -- routing (case-insensitive, as the appliance is) ----------------------------

    async def _dispatch(self, request: web.Request) -> web.Response:
        path = _REPEATED_SLASHES.sub("/", request.path.casefold())  # cvpysdk writes <base>//V4/...
        base = self.base_path.casefold()
        if not path.startswith(base + "/"):
            return _error(404, "Not found")
        path = path[len(base):]
        if path == "/" and request.method == "GET":
            return web.json_response({"service": "Commvault REST API", "basePath": self.base_path})  # cvpysdk's probe
        if request.method == "POST" and path in ("/login", "/renewlogintoken", "/logout"):
            return await {"/login": self._login, "/renewlogintoken": self._renew_login, "/logout": self._logout}[path](request)
        matching = [(m, p, h) for m, p, h in self._routes if p.fullmatch(path)]
        if not matching:
            return _error(404, "Not found")
        found = next(((p, h) for m, p, h in matching if m == request.method), None)
        if found is None:
            return _error(405, "Method not allowed")
        pattern, handler = found
        if handler is None:
            return await self._renew_token(request)
        caller = self._caller(request)
        if isinstance(caller, web.Response):
            return caller
        refused = self._scope_refusal(request, caller, path)
        if refused is not None:
            return refused
        match = pattern.fullmatch(path)
        assert match is not None
        return await handler(request, caller, match)

    # -- logins -------------------------------------------------------------------

    async def _login(self, request: web.Request) -> web.Response:
        body = await _json_or_none(request)
        username = body.get("username") if isinstance(body, dict) else None
        password = _b64(body.get("password")) if isinstance(body, dict) else None
        known = self.users.get(username) if isinstance(username, str) else None
        if known is None or password is None or not secrets.compare_digest(known.encode(), password.encode()):
            return web.json_response({"errList": [{"errorCode": 5, "errLogMessage": "User name or password is incorrect."}]})
        assert isinstance(username, str)
        token = "QSDK " + secrets.token_hex(96)
        self.logins[token] = _Login(username, self.clock() + LOGIN_IDLE)
        return web.json_response({
            "aliasName": str(self.user_ids[username]), "userGUID": str(uuid.uuid5(uuid.NAMESPACE_DNS, username)),
            "loginAttempts": 0, "remainingLockTime": 0, "smtpAddress": f"{username}@lab.example", "userName": username,
            "providerType": 1, "ccn": 0, "token": token, "forcePasswordChange": False, "isAccountLocked": False,
            "errList": [],
        })

    async def _renew_login(self, request: web.Request) -> web.Response:
        body = await _json_or_none(request)
        session = body.get("sessionId") if isinstance(body, dict) else None
        login = self._live_login(session) if isinstance(session, str) else None
        if login is None:
            return web.json_response({"error": {"errorCode": 1, "errLogMessage": "Invalid session"}}, status=401)
        assert isinstance(session, str)
        del self.logins[session]
        token = "QSDK " + secrets.token_hex(96)
        self.logins[token] = _Login(login.username, self.clock() + LOGIN_IDLE)
        return web.json_response({"token": token})

    async def _logout(self, request: web.Request) -> web.Response:
        session = request.headers.get("Authtoken", "")
        if self._live_login(session) is None:
            return _error(401, "Access denied")
        del self.logins[session]
        return web.Response(text="User logged out")

    def _live_login(self, token: str) -> _Login | None:
        login = self.logins.get(token)
        if login is None or self.clock() >= login.expires_at:
            self.logins.pop(token, None)
            return None
        login.expires_at = self.clock() + LOGIN_IDLE  # idle timeout: every use extends it
        return login

    # -- who is calling, and may they ----------------------------------------------

    def _caller(self, request: web.Request) -> Caller | web.Response:
        authtoken = request.headers.get("Authtoken")
        token = bearer_of(request)
        scheme, _, value = (authtoken or "").partition(" ")
        if scheme.casefold() == "bearer":  # Commvault's convention for access tokens: "Authtoken: Bearer <token>"
            authtoken, token = None, value.strip() or None
        if authtoken is not None:
            login = self._live_login(authtoken)
            if login is None:
                return _error(401, "Access denied")
            return Caller(login.username, self.user_ids[login.username])
        chain = self.tokens.current(token) if token is not None else None
        if chain is None:
            return _error(401, "Access denied")
        if self.clock() >= chain.access_expires:
            return _error(401, "The access token has expired")
        return Caller(chain.username, chain.user_id, chain)

    def _scope_refusal(self, request: web.Request, caller: Caller, path: str) -> web.Response | None:
        chain = caller.chain
        if chain is None:
            return None
        allowlist = self.ip_allowlists.get(chain.username)
        if allowlist and not ip_allowed(self._client_ip(request), allowlist):
            return _error(403, "Requests for this account are not allowed from this IP address")
        if path.startswith("/v4/accesstoken") and request.method in ("POST", "PUT", "DELETE"):
            return _error(403, ACCESS_TOKEN_ADMIN)
        return None if scope_allows(chain.token_type, chain.api_endpoints, path) else _error(403, OUT_OF_SCOPE)

    def _client_ip(self, request: web.Request) -> str | None:
        if self.trust_forwarded_for and "X-Forwarded-For" in request.headers:
            return request.headers.getall("X-Forwarded-For")[-1].split(",")[-1].strip()
        return request.remote

    # -- access tokens ----------------------------------------------------------------

    async def _create_token(self, request: web.Request, caller: Caller, match: re.Match[str]) -> web.Response:
        created = self.tokens.create(caller.username, caller.user_id, await _json_or_none(request))
        if isinstance(created, Refusal):
            return _error(created.status, created.message)
        return web.json_response({"error": {"errorCode": 0}, "tokenInfo": created.info(secrets_too=True)})

    async def _list_tokens(self, request: web.Request, caller: Caller, match: re.Match[str]) -> web.Response:
        wanted = request.query.get("userId", str(caller.user_id))
        if not wanted.isdigit():
            return _error(400, "userId must be a number")
        if int(wanted) != caller.user_id:
            return _error(403, "You cannot see the access tokens of another user")
        mine = [c.info(secrets_too=False) for c in self.tokens.chains.values() if c.user_id == caller.user_id and not c.dead]
        return web.json_response({"accessTokens": mine})

    def _own_chain(self, caller: Caller, match: re.Match[str]) -> TokenChain | web.Response:
        chain = self.tokens.chains.get(int(match.group(1)))
        if chain is None or chain.dead or chain.user_id != caller.user_id:
            return _error(404, "Access token not found")
        return chain

    async def _edit_token(self, request: web.Request, caller: Caller, match: re.Match[str]) -> web.Response:
        chain = self._own_chain(caller, match)
        if isinstance(chain, web.Response):
            return chain
        refused = self.tokens.edit(chain, await _json_or_none(request))
        if refused is not None:
            return _error(refused.status, refused.message)
        return web.json_response({"tokenInfo": chain.info(secrets_too=False)})

    async def _delete_token(self, request: web.Request, caller: Caller, match: re.Match[str]) -> web.Response:
        chain = self._own_chain(caller, match)
        if isinstance(chain, web.Response):
            return chain
        self.tokens.delete(chain)
        return web.json_response({"errorCode": 0, "errorMessage": ""})

    async def _renew_token(self, request: web.Request) -> web.Response:
        renewed = self.tokens.renew(await _json_or_none(request))
        if isinstance(renewed, Refusal):
            return _error(renewed.status, renewed.message)
        return web.json_response({"tokenInfo": renewed.info(secrets_too=True)})

def _error(status: int, message: str) -> web.Response:
    return web.json_response({"errorCode": status, "errorMessage": message}, status=status)


async def _json_or_none(request: web.Request) -> Any:
    try:
        return await request.json()
    except ValueError:
        return None


def _b64(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    try:
        return base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
