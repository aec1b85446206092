"""A mock HPE SimpliVity (OmniStack) REST API, faithful to what clients see.

What it mirrors (HPE's "Requesting authentication by emergency grant" and the
SimpliVity REST API as its clients use it):

* ``POST /api/oauth/token``: form ``grant_type=password|emergency``,
  ``username``, ``password``, HTTP Basic client ``simplivity`` with an empty
  secret; answers ``{"access_token": "<uuid>", "token_type": "bearer",
  "expires_in", "scope": "read write", "updated_at"}``; wrong credentials
  answer 400 ``{"error": "invalid_grant", "error_description": "Invalid credentials"}``.
* opaque UUID tokens that only it can validate; 401 with the Spring-style
  ``Unauthorized`` body for anything else; ``GET /api/oauth/revoke`` ends the
  presented token.
* ``GET /api/hosts``, ``/api/omnistack_clusters``, ``/api/backups``,
  ``/api/datastores``, ``/api/virtual_machines`` (with ``offset``/``limit``
  paging), ``GET /api/hosts/{id}``, ``DELETE /api/backups/{id}``,
  ``POST /api/backups/{bkpId}/restore`` (a task), ``GET /api/tasks/{id}``,
  and the unauthenticated ``GET /api/version``.
* "Tokens expire either after ten minutes of inactivity or after 24 hours
  even with continuous activity": every token, both grants; an expired one
  answers 401 ``{"error": "invalid_token", "message": "Access token expired
  due to inactivity: <token>"}`` or ``"Access token expired: <token>"``.
* The emergency grant's limits, enforced here as the appliance does: "clients
  can only access" ``GET /hosts``, ``/omnistack_clusters``, ``/backups``,
  ``/datastores``, ``/virtual_machines`` and ``POST /backups/{bkpId}/restore``
  (so not ``/api/hosts/{id}``, not ``DELETE`` on a backup, not
  ``/api/tasks/{id}``), and "the REST API does not support sorting and
  filtering GET requests or querying for optional properties": any query
  parameter but ``offset`` and ``limit`` (and the restore call's
  ``restore_original``) is refused.

labgate's tests check that labgate refuses first (``received``).

Not in the sources, chosen here: an emergency token outside its operations
gets 403 with the Spring-style body (``"error": "Forbidden"``, ``"message":
"Access is denied"``), and sorting or filtering with one gets 400 (``"error":
"Bad Request"``); password tokens may page but their filters are not applied.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

CLIENT_BASIC = "Basic c2ltcGxpdml0eTo="  # simplivity: (empty secret)
EXPIRES_IN = 86400
IDLE = 600  # "after ten minutes of inactivity"
ABSOLUTE = 86400  # "or after 24 hours even with continuous activity"
EMERGENCY_QUERY = frozenset({"offset", "limit"})


@dataclass
class SimplivityAccounts:
    """Who may log in: regular users (password grant) and the emergency svtcli account."""

    users: dict[str, str] = field(default_factory=lambda: {"administrator@vsphere.local": "vmware1!"})
    emergency: dict[str, str] = field(default_factory=lambda: {"svtcli": "svtcli-pw"})


@dataclass
class _Token:
    grant: str
    username: str
    issued_at: float
    last_used: float


class SimplivityAppliance:
    """The mock's state; ``app()`` builds the aiohttp application serving it."""

    def __init__(self, accounts: SimplivityAccounts | None = None, *, clock: Callable[[], float] = time.time) -> None:
        self.accounts = accounts or SimplivityAccounts()
        self.clock = clock
        self.tokens: dict[str, _Token] = {}
        self.received: list[tuple[str, str]] = []  # (method, raw path with query) of every request
        self.backups = [_backup(i) for i in range(3)]
        self.hosts = [_host(i) for i in range(2)]
        self.tasks: dict[str, dict[str, Any]] = {}

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._record])
        app.router.add_post("/api/oauth/token", self._token)
        app.router.add_get("/api/oauth/revoke", self._revoke)
        app.router.add_get("/api/version", self._version)
        app.router.add_get("/api/hosts", self._collection("hosts"))
        app.router.add_get("/api/hosts/{id}", self._host)
        app.router.add_get("/api/omnistack_clusters", self._collection("omnistack_clusters"))
        app.router.add_get("/api/backups", self._collection("backups"))
        app.router.add_delete("/api/backups/{id}", self._delete_backup)
        app.router.add_post("/api/backups/{bkpId}/restore", self._restore)
        app.router.add_get("/api/datastores", self._collection("datastores"))
        app.router.add_get("/api/virtual_machines", self._collection("virtual_machines"))
        app.router.add_get("/api/tasks/{id}", self._task)
        return app

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.received.append((request.method, request.raw_path))
        response: web.StreamResponse = await handler(request)
        return response

    # -- authentication ---------------------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization") != CLIENT_BASIC:
            return web.json_response({"error": "unauthorized", "error_description": "Full authentication is required"}, status=401)
        form = await request.post()
        grant, username, password = form.get("grant_type"), form.get("username"), form.get("password")
        accounts = {"password": self.accounts.users, "emergency": self.accounts.emergency}.get(str(grant))
        if accounts is None:
            return web.json_response(
                {"error": "unsupported_grant_type", "error_description": f"Unsupported grant type: {str(grant)[:64]}"}, status=400
            )
        if not isinstance(username, str) or accounts.get(username) != password:
            return web.json_response({"error": "invalid_grant", "error_description": "Invalid credentials"}, status=400)
        token, now = str(uuid.uuid4()), self.clock()
        self.tokens[token] = _Token(str(grant), username, now, now)
        return web.json_response(
            {
                "access_token": token,
                "token_type": "bearer",
                "expires_in": EXPIRES_IN,
                "scope": "read write",
                "updated_at": int(now * 1000),
            },
            headers={"Cache-Control": "no-store"},
        )

    def _caller(self, request: web.Request) -> _Token | web.Response:
        """The live token presented, or the 401 the appliance answers (unknown, idle or past 24 hours)."""
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        found = self.tokens.get(token) if scheme.lower() == "bearer" else None
        if found is None:
            return _unauthorized(request)
        now = self.clock()
        if now >= found.issued_at + ABSOLUTE:
            return _expired(f"Access token expired: {token}")
        if now >= found.last_used + IDLE:
            return _expired(f"Access token expired due to inactivity: {token}")
        found.last_used = now
        return found

    def _emergency_refusal(
        self, request: web.Request, caller: _Token, *, allowed: bool, query: frozenset[str] = EMERGENCY_QUERY
    ) -> web.Response | None:
        """An emergency token outside its six operations, or sorting, filtering or asking for optional fields."""
        if caller.grant != "emergency":
            return None
        if not allowed:
            return _refused(request, 403, "Forbidden", "Access is denied")
        if any(name not in query for name in request.query):
            return _refused(
                request, 400, "Bad Request", "Sorting, filtering and optional properties are not supported with an emergency token"
            )
        return None

    async def _revoke(self, request: web.Request) -> web.Response:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if self.tokens.pop(token, None) is None:
            return _unauthorized(request)
        return web.Response(status=200)

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"REST_API_Version": "1.25", "SVTFS_Version": "5.3.0"})

    # -- resources --------------------------------------------------------------

    def _collection(self, name: str) -> Any:
        async def handler(request: web.Request) -> web.Response:
            caller = self._caller(request)
            if isinstance(caller, web.Response):
                return caller
            refused = self._emergency_refusal(request, caller, allowed=True)
            if refused is not None:
                return refused
            items = {"hosts": self.hosts, "backups": self.backups}.get(name, [])
            offset = int(request.query.get("offset", "0"))
            limit = min(int(request.query.get("limit", "500")), 5000)
            page = items[offset : offset + limit]
            return web.json_response({"offset": offset, "limit": limit, "count": len(items), name: page})

        return handler

    async def _host(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        if isinstance(caller, web.Response):
            return caller
        refused = self._emergency_refusal(request, caller, allowed=False)
        if refused is not None:
            return refused
        found = [h for h in self.hosts if h["id"] == request.match_info["id"]]
        if not found:
            return web.json_response({"message": "Host not found"}, status=404)
        return web.json_response({"host": found[0]})

    async def _delete_backup(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        if isinstance(caller, web.Response):
            return caller
        refused = self._emergency_refusal(request, caller, allowed=False)
        if refused is not None:
            return refused
        self.backups = [b for b in self.backups if b["id"] != request.match_info["id"]]
        return web.json_response({"task": _task(str(uuid.uuid4()), "COMPLETED")})

    async def _restore(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        if isinstance(caller, web.Response):
            return caller
        refused = self._emergency_refusal(request, caller, allowed=True, query=frozenset({"restore_original"}))
        if refused is not None:
            return refused
        task = _task(str(uuid.uuid4()), "IN_PROGRESS")
        self.tasks[task["id"]] = task
        return web.json_response({"task": task}, status=202)

    async def _task(self, request: web.Request) -> web.Response:
        caller = self._caller(request)
        if isinstance(caller, web.Response):
            return caller
        refused = self._emergency_refusal(request, caller, allowed=False)  # polling the restore task is not among the six
        if refused is not None:
            return refused
        task = self.tasks.get(request.match_info["id"])
        if task is None:
            return web.json_response({"message": "Task not found"}, status=404)
        return web.json_response({"task": task})


def _expired(message: str) -> web.Response:
    return web.json_response({"error": "invalid_token", "message": message}, status=401)


def _refused(request: web.Request, status: int, error: str, message: str) -> web.Response:
    body = {"timestamp": int(time.time() * 1000), "status": status, "error": error, "message": message, "path": request.path}
    return web.json_response(body, status=status)


def _unauthorized(request: web.Request) -> web.Response:
    return web.json_response(
        {
            "timestamp": int(time.time() * 1000),
            "status": 401,
            "error": "Unauthorized",
            "exception": "com.simplivity.restapi.exceptions.UnauthorizedException",
            "message": "Unauthorized",
            "path": request.path,
        },
        status=401,
    )


def _host(i: int) -> dict[str, Any]:
    return {
        "id": f"4224{i:04d}-host-{i}",
        "name": f"omnicube-{i}.lab.local",
        "state": "ALIVE",
        "model": "HPE SimpliVity 380 Series 4000",
        "version": "Release 5.3.0",
        "management_ip": f"10.20.0.{10 + i}",
        "storage_ip": f"10.30.0.{10 + i}",
        "federation_ip": f"10.40.0.{10 + i}",
        "omnistack_cluster_id": "cluster-1",
        "hypervisor_object_id": f"host-{i}",
    }


def _backup(i: int) -> dict[str, Any]:
    return {
        "id": f"backup-{i}",
        "name": f"daily-{i}",
        "state": "PROTECTED",
        "type": "MANUAL",
        "omnistack_cluster_id": "cluster-1",
        "datastore_id": "datastore-1",
        "virtual_machine_id": f"vm-{i}",
        "virtual_machine_name": f"vm-{i}",
        "size": 1024 * (i + 1),
        "created_at": "2026-11-01T02:00:00Z",
        "expiration_time": "2026-12-01T02:00:00Z",
    }


def _task(task_id: str, state: str) -> dict[str, Any]:
    return {"id": task_id, "state": state, "affected_objects": [], "error_code": 0, "start_time": "2026-11-23T00:00:00Z", "end_time": "NA"}
