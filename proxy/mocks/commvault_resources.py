"""The mock Commvault's resources: what a client lists, in the shapes Commvault's own SDK reads.

Shapes from Commvault's REST API documentation ('GET Client' with its
``PseudoClientType`` parameter) and from what cvpysdk (Commvault's Python
SDK) parses when it connects with a token and lists things:

* ``GET <base>/`` answers 200 without a token: cvpysdk probes the web service
  there before anything else.
* ``POST /WhoAmI`` -> ``{"user": {"userName", "userId", "userGUID"}}``: how the
  SDK learns whose token it holds.
* ``GET /Client`` -> ``{"clientProperties": [{"client": {"clientEntity":
  {clientId, clientName, hostName, displayName}}}]}``; with
  ``?hiddenclients=true`` the hidden clients too; with
  ``?PseudoClientType=VSPseudo`` ``{"VSPseudoClientsList": [{"client": {...}}]}``.
* ``GET /VSAClientAndClientGroupList`` -> ``{"clients": [{clientId,
  clientName, displayName, hostName}]}`` (virtualization access nodes).
* ``GET /ClientGroup`` -> ``{"groups": [{"Id", "name"}]}``; ``GET /V2/Plan`` ->
  ``{"plans": [{"plan": {"planId", "planName"}}]}``; ``GET /V2/MediaAgents`` ->
  ``{"mediaAgentList": [{"mediaAgent": {mediaAgentId, mediaAgentName},
  "osInfo": {"OsDisplayInfo": {"OSName"}}, "status"}]}``; ``GET /MediaAgent``
  (the 1-Touch endpoint) -> ``{"response": [{"entityInfo": {id, name}, ...}]}``.

Not in the sources, chosen here: the probe's body, ``userGUID`` derived from
the name, which client is hidden and which is a virtualization client.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from proxy.mocks.commvault_tokens import TokenChain


@dataclass(frozen=True)
class Caller:
    """Who is calling: a login (``Authtoken``) or an access token (``Bearer``)."""

    username: str
    user_id: int
    chain: TokenChain | None = None


Handler = Callable[[web.Request, Caller, re.Match[str]], Awaitable[web.Response]]

GROUPS = [{"Id": 1, "name": "Laptop Clients"}, {"Id": 2, "name": "Servers"}]
SERVER_GROUPS = [{"id": 1, "name": "Servers"}]
PLANS = [{"plan": {"planId": 1, "planName": "Server plan"}}, {"plan": {"planId": 2, "planName": "Laptop plan"}}]
MEDIA_AGENTS = [{"id": 2, "name": "ma01", "os": "Linux"}]
FIREWALL = {"firewallSummary": {"configuredClients": 0, "firewallConfigs": []}}


def client_entity(i: int) -> dict[str, Any]:
    return {"clientId": i, "clientName": f"client{i:02d}", "hostName": f"client{i:02d}.lab.local", "displayName": f"client{i:02d}"}


class ResourceHandlers:
    """The resources one mock Commvault serves; ``clients`` is the mutable part (DELETE /Client/{id})."""

    def __init__(self) -> None:
        self.clients = [client_entity(i) for i in range(1, 4)]
        # A client Command Center does not list unless asked (e.g. a VM's): id 90.
        self.hidden_clients = [dict(client_entity(90), clientName="vm-hidden", displayName="vm-hidden")]
        # A virtualization (VSA pseudo) client and the access node that serves it.
        self.vsa_clients = [dict(client_entity(50), clientName="vcenter01", displayName="vcenter01")]
        self.vsa_access_nodes = [self.clients[0]]

    def routes(self) -> list[tuple[str, re.Pattern[str], Handler]]:
        """(method, lower-cased path pattern, handler), as the mock's dispatcher takes them."""
        return [
            ("POST", re.compile(r"/whoami"), self.who_am_i),
            ("GET", re.compile(r"/client"), self.list_clients),
            ("DELETE", re.compile(r"/client/(\d+)"), self.delete_client),
            ("GET", re.compile(r"/vsaclientandclientgrouplist"), self.access_nodes),
            ("GET", re.compile(r"/clientgroup"), _static({"groups": GROUPS})),
            ("GET", re.compile(r"/v4/servergroup"), _static({"serverGroups": SERVER_GROUPS})),
            ("GET", re.compile(r"/v2/plan"), _static({"plans": PLANS})),
            ("GET", re.compile(r"/v2/mediaagents"), _static({"mediaAgentList": [_v2_media_agent(m) for m in MEDIA_AGENTS]})),
            ("GET", re.compile(r"/mediaagent"), _static({"response": [_media_agent(m) for m in MEDIA_AGENTS]})),
            ("GET", re.compile(r"/firewallsummary"), _static(FIREWALL)),
        ]

    async def who_am_i(self, request: web.Request, caller: Caller, match: re.Match[str]) -> web.Response:
        guid = str(uuid.uuid5(uuid.NAMESPACE_DNS, caller.username))
        return web.json_response({"user": {"userName": caller.username, "userId": caller.user_id, "userGUID": guid}})

    async def list_clients(self, request: web.Request, caller: Caller, match: re.Match[str]) -> web.Response:
        pseudo = request.query.get("PseudoClientType")
        if pseudo is not None:
            listed = self.vsa_clients if pseudo.casefold() == "vspseudo" else []
            return web.json_response({"VSPseudoClientsList": [{"client": dict(c)} for c in listed]})
        shown = self.clients + (self.hidden_clients if request.query.get("hiddenclients", "").casefold() == "true" else [])
        return web.json_response({"clientProperties": [{"client": {"clientEntity": c}} for c in shown]})

    async def access_nodes(self, request: web.Request, caller: Caller, match: re.Match[str]) -> web.Response:
        return web.json_response({"clients": [dict(c) for c in self.vsa_access_nodes]})

    async def delete_client(self, request: web.Request, caller: Caller, match: re.Match[str]) -> web.Response:
        client_id = int(match.group(1))
        found = next((c for c in self.clients if c["clientId"] == client_id), None)
        if found is None:
            return web.json_response({"response": [{"errorCode": 2, "errorString": f"Client [{client_id}] not found"}]})
        self.clients.remove(found)
        entity = {"clientId": client_id, "clientName": found["clientName"], "_type_": 3}
        return web.json_response({"response": [{"errorCode": 0, "entity": entity}]})


def _static(body: dict[str, Any]) -> Handler:
    async def handler(request: web.Request, caller: Caller, match: re.Match[str]) -> web.Response:
        return web.json_response(body)

    return handler


def _media_agent(agent: dict[str, Any]) -> dict[str, Any]:
    return {"entityInfo": {"id": agent["id"], "name": agent["name"]}, "osInfo": {"OsDisplayInfo": {"OSName": agent["os"]}}}


def _v2_media_agent(agent: dict[str, Any]) -> dict[str, Any]:
    return {
        "mediaAgent": {"mediaAgentId": agent["id"], "mediaAgentName": agent["name"]},
        "osInfo": {"OsDisplayInfo": {"OSName": agent["os"]}},
        "status": 1,
    }
