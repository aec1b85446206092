"""A mock VMware VCF Operations suite-api, faithful to what clients see.

What it mirrors (VCF Operations "Create Emergency Client" reference, the VCF Operations API reference):

* ``POST /suite-api/api/auth/token/acquire`` ``{"username", "password",
  "authSource"?}`` → ``{"token", "validity", "expiresAt", "roles": []}``; the
  token goes in ``Authorization: OpsToken <token>`` and lives 6 hours from its
  last use (sliding); ``POST /suite-api/api/auth/token/release`` ends it.
* SSO bearer tokens in ``Authorization: Bearer``: the emergency clients'
  tokens.  Who a bearer token is comes from a pluggable validator (an async
  callable ``token -> Principal | None``), so that a demo can let labgate's own
  issuer vouch for them; by default the mock accepts the tokens it issued.
* emergency clients under
  ``/suite-api/api/fleet-management/iam/ssorealms/{ssoRealmId}/emergency-clients``:
  ``POST`` creates one (``clientId``, ``clientName``, ``clientDescription``?,
  ``accessTokenTtl`` in minutes, ``roles``?) → 201 with its ``accessToken``,
  shown only then; ``GET`` lists them as ``{"emergencyClients": [...]}``;
  ``GET``/``DELETE`` ``/{clientId}``; ``POST /{clientId}/regenerate`` → a new
  token, the old one dead.  Records carry the vendor document's field names:
  ``accessTokenExpirationDate`` (epoch ms), ``accessTokenStatus``
  (``ACTIVE``/``EXPIRED``), ``tokenEndpointUrl``, ``oidcIssuerUrl``.
* ``GET /suite-api/api/resources`` and ``/alerts`` (and one of each by id),
  paged with ``page``/``pageSize`` as ``{"pageInfo", "links", "resourceList"}``
  and ``{"pageInfo", "links", "alerts"}``; ``GET /suite-api/api/versions/current``.
* 401 when the credential is missing or invalid, 403 when the caller may not
  administer emergency clients (only an administrator may create, regenerate
  or delete them).

Not in the sources, chosen here: the error body ``{"message",
"httpStatusCode", "apiErrorCode"}`` (the suite-api's usual shape; the
``apiErrorCode`` values are made up), the list and delete paths (the reference
marks them unconfirmed), 204 for a delete, 409 for a duplicate ``clientId``,
that emergency-client tokens are HS256 JWTs (the vendor document's example starts with
``eyJhbGciOiJIUz``), the ``expiresAt`` text format, and the resource and alert
fields beyond the page wrappers.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import jwt
from aiohttp import web

from proxy.mocks.recording import bearer_of, recording_middleware

API = "/suite-api/api"
EMERGENCY_CLIENTS = f"{API}/fleet-management/iam/ssorealms/{{ssoRealmId}}/emergency-clients"
SESSION_SECONDS = 6 * 3600
INT32_MAX = 2**31 - 1


@dataclass(frozen=True)
class Principal:
    """Who a credential is, and whether it may administer emergency clients."""

    name: str
    admin: bool = False


BearerValidator = Callable[[str], Awaitable[Principal | None]]


@dataclass(frozen=True)
class OpsUser:
    username: str
    password: str
    auth_source: str = "LOCAL"
    roles: tuple[str, ...] = ("Administrator",)


def _default_users() -> dict[str, OpsUser]:
    return {"admin": OpsUser("admin", "admin-pw"), "viewer": OpsUser("viewer", "viewer-pw", roles=("ReadOnly",))}


@dataclass
class _Session:
    user: OpsUser
    expires_at: float


@dataclass
class _EmergencyClient:
    realm: str
    client_id: str
    client_name: str
    description: str | None
    ttl_minutes: int
    roles: list[Any]
    token: str = ""
    expires_at: float = 0.0


@dataclass
class _Paging:
    page: int
    size: int


class VcfOperationsAppliance:
    """The mock's state; ``app()`` builds the aiohttp application serving it."""

    def __init__(
        self,
        *,
        users: Mapping[str, OpsUser] | None = None,
        sso_realms: tuple[str, ...] = ("vcf-sso",),
        broker_url: str = "https://vidb.lab.local/acs/t/CUSTOMER",
        bearer_validator: BearerValidator | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.users = dict(users) if users is not None else _default_users()
        self.sso_realms = sso_realms
        self.broker_url = broker_url
        self.bearer_validator = bearer_validator or self.own_bearer
        self.clock = clock
        self.sessions: dict[str, _Session] = {}
        self.emergency_clients: dict[tuple[str, str], _EmergencyClient] = {}
        self.received: list[tuple[str, str]] = []  # (method, raw path with query) of every request
        self._signing_secret = secrets.token_bytes(64)
        self.resources = [_resource(i) for i in range(3)]
        self.alerts = [_alert(i, self.resources[i]["identifier"]) for i in range(2)]

    def app(self) -> web.Application:
        app = web.Application(middlewares=[recording_middleware(self.received)])
        app.router.add_post(f"{API}/auth/token/acquire", self._acquire)
        app.router.add_post(f"{API}/auth/token/release", self._release)
        app.router.add_get(f"{API}/versions/current", self._version)
        app.router.add_get(f"{API}/resources", self._list("resourceList", self.resources))
        app.router.add_get(f"{API}/resources/{{id}}", self._one(self.resources))
        app.router.add_get(f"{API}/alerts", self._list("alerts", self.alerts))
        app.router.add_get(f"{API}/alerts/{{id}}", self._one(self.alerts))
        app.router.add_get(EMERGENCY_CLIENTS, self._list_emergency_clients)
        app.router.add_post(EMERGENCY_CLIENTS, self._create_emergency_client)
        app.router.add_get(EMERGENCY_CLIENTS + "/{clientId}", self._get_emergency_client)
        app.router.add_delete(EMERGENCY_CLIENTS + "/{clientId}", self._delete_emergency_client)
        app.router.add_post(EMERGENCY_CLIENTS + "/{clientId}/regenerate", self._regenerate_emergency_client)
        return app

    async def own_bearer(self, token: str) -> Principal | None:
        """The default validator: an emergency client's current, unexpired token."""
        for client in self.emergency_clients.values():
            if client.token and secrets.compare_digest(client.token, token) and self.clock() < client.expires_at:
                return Principal(client.client_id, admin=False)
        return None

    # -- sessions -----------------------------------------------------------------

    async def _acquire(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "The request body is not valid JSON")
        if not isinstance(body, dict) or not isinstance(body.get("username"), str) or not isinstance(body.get("password"), str):
            return _error(400, "username and password are required")
        user = self.users.get(body["username"])
        source = body.get("authSource")
        if (
            user is None
            or not secrets.compare_digest(user.password.encode(), body["password"].encode())
            or (source is not None and (not isinstance(source, str) or source.casefold() != user.auth_source.casefold()))
        ):
            return _error(401, "Invalid username or password.")
        token = f"{uuid.uuid4()}::{uuid.uuid4()}"
        expires = self.clock() + SESSION_SECONDS
        self.sessions[token] = _Session(user, expires)
        return web.json_response({"token": token, "validity": int(expires * 1000), "expiresAt": _expires_at(expires), "roles": []})

    async def _release(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme != "OpsToken" or self.sessions.pop(token.strip(), None) is None:
            return _error(401, "Authentication required")
        return web.Response(status=200)

    async def _caller(self, request: web.Request) -> Principal | web.Response:
        scheme, _, credential = request.headers.get("Authorization", "").partition(" ")
        credential = credential.strip()
        if scheme == "OpsToken" and credential:
            session = self.sessions.get(credential)
            if session is None or self.clock() >= session.expires_at:
                self.sessions.pop(credential, None)
                return _error(401, "Invalid or expired OpsToken")
            session.expires_at = self.clock() + SESSION_SECONDS  # sliding: every use extends it
            return Principal(session.user.username, admin="Administrator" in session.user.roles)
        token = bearer_of(request)
        if token is None:
            return _error(401, "Authentication required")
        principal = await self.bearer_validator(token)
        return principal if principal is not None else _error(401, "Invalid bearer token")

    # -- resources and alerts ------------------------------------------------------

    async def _version(self, request: web.Request) -> web.Response:
        caller = await self._caller(request)
        if isinstance(caller, web.Response):
            return caller
        return web.json_response({"releaseName": "VCF Operations 9.0.0", "major": 9, "minor": 0, "minorMinor": 0,
                                  "buildNumber": 24695812, "releaseDate": 1750118400000,
                                  "humanlyReadableReleaseDate": "June 17, 2025"})

    def _list(self, name: str, items: list[dict[str, Any]]) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            caller = await self._caller(request)
            if isinstance(caller, web.Response):
                return caller
            paging = _paging(request.query)
            if paging is None:
                return _error(400, "page must be at least 0 and pageSize at least 1")
            page = items[paging.page * paging.size : (paging.page + 1) * paging.size]
            return web.json_response({
                "pageInfo": {"totalCount": len(items), "page": paging.page, "pageSize": paging.size},
                "links": [{"href": request.raw_path, "rel": "SELF", "name": "current"}],
                name: page,
            })

        return handler

    def _one(self, items: list[dict[str, Any]]) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            caller = await self._caller(request)
            if isinstance(caller, web.Response):
                return caller
            wanted = request.match_info["id"]
            found = next((i for i in items if wanted in (i.get("identifier"), i.get("alertId"))), None)
            return web.json_response(found) if found is not None else _error(404, f"No such object: {wanted}")

        return handler

    # -- emergency clients ---------------------------------------------------------

    async def _realm_caller(self, request: web.Request, *, admin: bool) -> tuple[str, Principal] | web.Response:
        caller = await self._caller(request)
        if isinstance(caller, web.Response):
            return caller
        if admin and not caller.admin:
            return _error(403, "Insufficient privileges to administer emergency clients")
        realm = request.match_info["ssoRealmId"]
        if realm not in self.sso_realms:
            return _error(404, f"SSO realm not found: {realm}")
        return realm, caller

    async def _list_emergency_clients(self, request: web.Request) -> web.Response:
        checked = await self._realm_caller(request, admin=False)
        if isinstance(checked, web.Response):
            return checked
        realm, _ = checked
        listed = [self._record(c) for (r, _), c in self.emergency_clients.items() if r == realm]
        return web.json_response({"emergencyClients": listed})

    async def _create_emergency_client(self, request: web.Request) -> web.Response:
        checked = await self._realm_caller(request, admin=True)
        if isinstance(checked, web.Response):
            return checked
        realm, _ = checked
        try:
            body = await request.json()
        except ValueError:
            return _error(400, "The request body is not valid JSON")
        problem = _emergency_client_problem(body)
        if problem is not None:
            return _error(400, problem)
        if (realm, body["clientId"]) in self.emergency_clients:
            return _error(409, f"An emergency client with clientId {body['clientId'][:64]} already exists")
        client = _EmergencyClient(realm, body["clientId"], body["clientName"], body.get("clientDescription"),
                                  body["accessTokenTtl"], list(body.get("roles") or []))
        self._new_token(client)
        self.emergency_clients[(realm, client.client_id)] = client
        return web.json_response({**self._record(client), "accessToken": client.token}, status=201)

    async def _get_emergency_client(self, request: web.Request) -> web.Response:
        found = await self._emergency_client(request, admin=False)
        return found if isinstance(found, web.Response) else web.json_response(self._record(found))

    async def _delete_emergency_client(self, request: web.Request) -> web.Response:
        found = await self._emergency_client(request, admin=True)
        if isinstance(found, web.Response):
            return found
        del self.emergency_clients[(found.realm, found.client_id)]
        return web.Response(status=204)

    async def _regenerate_emergency_client(self, request: web.Request) -> web.Response:
        found = await self._emergency_client(request, admin=True)
        if isinstance(found, web.Response):
            return found
        self._new_token(found)
        return web.json_response({**self._record(found), "accessToken": found.token})

    async def _emergency_client(self, request: web.Request, *, admin: bool) -> _EmergencyClient | web.Response:
        checked = await self._realm_caller(request, admin=admin)
        if isinstance(checked, web.Response):
            return checked
        realm, _ = checked
        found = self.emergency_clients.get((realm, request.match_info["clientId"]))
        return found if found is not None else _error(404, "Emergency client not found")

    def _new_token(self, client: _EmergencyClient) -> None:
        now = self.clock()
        client.expires_at = now + client.ttl_minutes * 60
        claims = {"iss": self.broker_url, "sub": client.client_id, "iat": int(now), "exp": int(client.expires_at),
                  "jti": str(uuid.uuid4())}
        client.token = jwt.encode(claims, self._signing_secret, algorithm="HS256")

    def _record(self, client: _EmergencyClient) -> dict[str, Any]:
        """An emergency client as the API shows it, without its token."""
        record: dict[str, Any] = {"clientId": client.client_id, "clientName": client.client_name}
        if client.description is not None:
            record["clientDescription"] = client.description
        record.update({
            "accessTokenTtl": client.ttl_minutes,
            "accessTokenExpirationDate": int(client.expires_at * 1000),
            "accessTokenStatus": "ACTIVE" if self.clock() < client.expires_at else "EXPIRED",
            "tokenEndpointUrl": f"{self.broker_url}/token",
            "oidcIssuerUrl": self.broker_url,
            "roles": client.roles,
        })
        return record


def _emergency_client_problem(body: Any) -> str | None:
    """Why a create request is not a valid EmergencyClient, or None."""
    if not isinstance(body, dict):
        return "The request body must be an EmergencyClient object"
    for name in ("clientId", "clientName"):
        if not isinstance(body.get(name), str) or not body[name]:
            return f"{name} is required and must not be empty"
    ttl = body.get("accessTokenTtl")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or not 0 < ttl <= INT32_MAX:
        return "accessTokenTtl is required: a positive number of minutes"
    if "clientDescription" in body and not isinstance(body["clientDescription"], str):
        return "clientDescription must be a string"
    roles = body.get("roles")
    if roles is not None and (not isinstance(roles, list) or not all(isinstance(r, dict) for r in roles)):
        return "roles must be an array of objects"
    return None


def _paging(query: Mapping[str, str]) -> _Paging | None:
    page, size = query.get("page", "0"), query.get("pageSize", "1000")
    if not page.isdigit() or not size.isdigit() or int(size) < 1:
        return None
    return _Paging(int(page), int(size))


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message, "httpStatusCode": status, "apiErrorCode": status}, status=status)


def _expires_at(epoch: float) -> str:
    moment = datetime.fromtimestamp(epoch, tz=UTC)
    return moment.strftime("%A, %B %-d, %Y %-I:%M:%S %p UTC")


def _resource(i: int) -> dict[str, Any]:
    return {
        "creationTime": 1750118400000 + i,
        "resourceKey": {
            "name": f"vm-{i:02d}",
            "adapterKindKey": "VMWARE",
            "resourceKindKey": "VirtualMachine",
            "resourceIdentifiers": [
                {"identifierType": {"name": "VMEntityObjectID", "dataType": "STRING", "isPartOfUniqueness": True},
                 "value": f"vm-{100 + i}"},
            ],
        },
        "resourceStatusStates": [{"resourceStatus": "DATA_RECEIVING", "resourceState": "STARTED", "statusMessage": ""}],
        "resourceHealth": "GREEN",
        "resourceHealthValue": 100.0,
        "dtEnabled": True,
        "badges": [{"type": "HEALTH", "color": "GREEN", "score": 100.0}],
        "relatedResources": [],
        "identifier": str(uuid.UUID(int=0x5EED0000 + i)),
    }


def _alert(i: int, resource_id: str) -> dict[str, Any]:
    return {
        "alertId": str(uuid.UUID(int=0xA1E70000 + i)),
        "resourceId": resource_id,
        "alertLevel": "CRITICAL" if i == 0 else "WARNING",
        "type": 16,
        "subType": 19,
        "status": "ACTIVE",
        "startTimeUTC": 1750200000000 + i,
        "cancelTimeUTC": 0,
        "updateTimeUTC": 1750200000000 + i,
        "suspendUntilTimeUTC": 0,
        "controlState": "OPEN",
        "alertDefinitionId": f"AlertDefinition-VMWARE-{i}",
        "alertDefinitionName": "Virtual machine has memory contention" if i == 0 else "Guest file system is running out of space",
        "alertImpact": "HEALTH",
    }

