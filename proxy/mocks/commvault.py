"""A mock Commvault REST API (Command Center / web console), faithful to what clients see.

What it mirrors (seed 004, ``shared/reference/vendor-apis.md`` section 5):

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
  ``Authorization: Bearer``, within their scope (All, Custom prefixes,
  1-Touch's five endpoints, SCIM), from an address on the service account's
  IP allowlist if it has one, and never to create, edit or delete access
  tokens (the vendor's own rule).
* ``GET /Client``, ``/ClientGroup``, ``/V4/ServerGroup``, ``/V2/Plan``,
  ``/MediaAgent``, ``/FirewallSummary`` and ``DELETE /Client/{id}`` with the
  documented shapes.  Paths are case-insensitive (``/client``,
  ``/v4/accesstoken/renew``), under a base path (``/commandcenter/api`` by
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
seed's Command Center steps say).  SaaS rate limits (429) are not modelled.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

from aiohttp import web

from proxy.mocks.commvault_tokens import (
    ALL,
    CUSTOM,
    DEFAULT_ACCESS_LIFETIME,
    MS_SCIM,
    ONE_TOUCH,
    AccessTokenBook,
    Refusal,
    TokenChain,
)
from proxy.mocks.recording import bearer_of, recording_middleware

LOGIN_IDLE = 30 * 60
ONE_TOUCH_ENDPOINTS = ("/client", "/mediaagent", "/clientgroup", "/v4/servergroup", "/firewallsummary")
SCIM_PREFIX = "/scim"
ACCESS_TOKEN_ADMIN = "An access token cannot be used to create, edit or delete access tokens"

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass
class _Login:
    username: str
    expires_at: float


@dataclass(frozen=True)
class Caller:
    """Who is calling: a login (``Authtoken``) or an access token (``Bearer``)."""

    username: str
    user_id: int
    chain: TokenChain | None = None


Handler = Callable[[web.Request, Caller, re.Match[str]], Awaitable[web.Response]]


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
        self.ip_allowlists: dict[str, list[IpNetwork | tuple[IpAddress, IpAddress]]] = {}
        self.received: list[tuple[str, str]] = []  # (method, raw path with query) of every request
        self.clients = [_client(i) for i in range(1, 4)]
        self._routes: list[tuple[str, re.Pattern[str], Handler | None]] = [
            ("POST", re.compile(r"/v4/accesstoken/renew"), None),  # the pair in the body authenticates it
            ("POST", re.compile(r"/v4/accesstoken"), self._create_token),
            ("GET", re.compile(r"/v4/accesstoken/?"), self._list_tokens),
            ("PUT", re.compile(r"/v4/accesstoken/(\d+)"), self._edit_token),
            ("DELETE", re.compile(r"/v4/accesstoken/(\d+)"), self._delete_token),
            ("GET", re.compile(r"/client"), self._list_clients),
            ("DELETE", re.compile(r"/client/(\d+)"), self._delete_client),
            ("GET", re.compile(r"/clientgroup"), self._static({"groups": [{"Id": 1, "name": "Laptop Clients"}, {"Id": 2, "name": "Servers"}]})),
            ("GET", re.compile(r"/v4/servergroup"), self._static({"serverGroups": [{"id": 1, "name": "Servers"}]})),
            ("GET", re.compile(r"/v2/plan"), self._static({"plans": [{"plan": {"planId": 1, "planName": "Server plan"}}]})),
            ("GET", re.compile(r"/mediaagent"), self._static({"response": [{"entityInfo": {"id": 2, "name": "ma01"}, "osInfo": {"OsDisplayInfo": {"OSName": "Linux"}}}]})),
            ("GET", re.compile(r"/firewallsummary"), self._static({"firewallSummary": {"configuredClients": 0, "firewallConfigs": []}})),
        ]

    def add_standing_token(self, access: str, username: str = "admin") -> None:
        """An All-scope access token of ``username`` with a known value that never expires.

        What a gateway in front holds as its credential (labgate's ``credential:
        {type: bearer}``): the lab demo hands the same value to both sides.
        """
        chain = self.tokens.create(username, self.user_ids[username], {"tokenName": "gateway", "tokenType": ALL, "renewableUntilTimestamp": 0})
        assert isinstance(chain, TokenChain)
        chain.access, chain.access_expires = access, float("inf")

    def app(self) -> web.Application:
        app = web.Application(middlewares=[recording_middleware(self.received)])
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        return app

    def set_ip_allowlist(self, username: str, entries: list[str]) -> None:
        """The service account may then be used only from these addresses, CIDRs and ranges ("a – b" or "a - b")."""
        self.ip_allowlists[username] = [_ip_entry(e) for e in entries]

    # -- routing (case-insensitive, as the appliance is) ----------------------------

    async def _dispatch(self, request: web.Request) -> web.Response:
        path = request.path.casefold()
        base = self.base_path.casefold()
        if not path.startswith(base + "/"):
            return _error(404, "Not found")
        path = path[len(base):]
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
        if authtoken is not None:
            login = self._live_login(authtoken)
            if login is None:
                return _error(401, "Access denied")
            return Caller(login.username, self.user_ids[login.username])
        token = bearer_of(request)
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
        if allowlist and not _allowed(self._client_ip(request), allowlist):
            return _error(403, "Requests for this account are not allowed from this IP address")
        if path.startswith("/v4/accesstoken") and request.method in ("POST", "PUT", "DELETE"):
            return _error(403, ACCESS_TOKEN_ADMIN)
        if chain.token_type == CUSTOM:
            allowed = any(path.startswith(e.casefold()) for e in chain.api_endpoints)
        elif chain.token_type == ONE_TOUCH:
            allowed = any(path == e or path.startswith(e + "/") for e in ONE_TOUCH_ENDPOINTS)
        elif chain.token_type == MS_SCIM:
            allowed = path == SCIM_PREFIX or path.startswith(SCIM_PREFIX + "/")
        else:
            allowed = True
        return None if allowed else _error(403, "This access token's scope does not include this API")

    def _client_ip(self, request: web.Request) -> str | None:
        if self.trust_forwarded_for and "X-Forwarded-For" in request.headers:
            return request.headers.getall("X-Forwarded-For")[-1].split(",")[-1].strip()
        return request.remote

    # -- access tokens ----------------------------------------------------------------

    async def _create_token(self, request: web.Request, caller: Caller, match: re.Match[str]) -> web.Response:
        created = self.tokens.create(caller.username, caller.user_id, await _json_or_none(request))
        if isinstance(created, Refusal):
            return _error(created.status, created.message)
        return web.json_response({"tokenInfo": created.info(secrets_too=True)})

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

    # -- resources ------------------------------------------------------------------------

    def _static(self, body: dict[str, Any]) -> Handler:
        async def handler(request: web.Request, caller: Caller, match: re.Match[str]) -> web.Response:
            return web.json_response(body)

        return handler

    async def _list_clients(self, request: web.Request, caller: Caller, match: re.Match[str]) -> web.Response:
        return web.json_response({"clientProperties": [{"client": {"clientEntity": c}} for c in self.clients]})

    async def _delete_client(self, request: web.Request, caller: Caller, match: re.Match[str]) -> web.Response:
        client_id = int(match.group(1))
        found = next((c for c in self.clients if c["clientId"] == client_id), None)
        if found is None:
            return web.json_response({"response": [{"errorCode": 2, "errorString": f"Client [{client_id}] not found"}]})
        self.clients.remove(found)
        entity = {"clientId": client_id, "clientName": found["clientName"], "_type_": 3}
        return web.json_response({"response": [{"errorCode": 0, "entity": entity}]})


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


def _ip_entry(text: str) -> IpNetwork | tuple[IpAddress, IpAddress]:
    """One allowlist entry: an address, a CIDR, or a range with a hyphen or an en dash."""
    for dash in ("–", "-"):
        if dash in text:
            low, high = (ipaddress.ip_address(part.strip()) for part in text.split(dash, 1))
            if low.version != high.version or low > high:  # type: ignore[operator]
                raise ValueError(f"not a range: {text!r}")
            return (low, high)
    return ipaddress.ip_network(text.strip(), strict=False)


def _allowed(address: str | None, allowlist: list[IpNetwork | tuple[IpAddress, IpAddress]]) -> bool:
    if address is None:
        return False
    try:
        ip: IpAddress = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for entry in allowlist:
        if isinstance(entry, tuple):
            low, high = entry
            if ip.version == low.version and low <= ip <= high:  # type: ignore[operator]
                return True
        elif ip.version == entry.version and ip in entry:
            return True
    return False


def _client(i: int) -> dict[str, Any]:
    return {"clientId": i, "clientName": f"client{i:02d}", "hostName": f"client{i:02d}.lab.local", "displayName": f"client{i:02d}"}
