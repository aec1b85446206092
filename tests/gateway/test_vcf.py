"""VCF Operations end to end: emergency clients from labgate's token service in front of the mock suite-api (VCF Operations "Create Emergency Client" reference).

The administrator makes emergency clients through labgate's management API,
in VCF's JSON shapes; their bearer tokens reach the mock VCF Operations
appliance (proxy.mocks.vcf) only through labgate, which forwards with a
standing bearer credential of its own, as ``labgate demo`` wires it.  The
appliance never sees a client's token, and what a token's roles or the vcf
pack refuse never reaches it.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest

from proxy.mocks.vcf import Principal, VcfOperationsAppliance
from tests.conftest import app_on_loopback
from tests.gateway.appliances import (  # noqa: F401 - a fixture
    direct,
    noting_authorization,
    through_labgate,
    transport,
)
from tests.gateway.token_service import ADMIN, ADMIN_HASH, admin_call
from tests.issuer.shipped import (
    ISSUER,
    Labgate,
    running_labgate,
    shipped_config,
    vcf_upstream,
)

STANDING = "vcf-standing-" + secrets.token_hex(16)  # labgate's credential at the appliance
REALM_CLIENTS = "/suite-api/api/fleet-management/iam/ssorealms/vcf-sso/emergency-clients"
NEW = {"clientId": "break-glass", "clientName": "Break glass", "clientDescription": "when SSO is down", "accessTokenTtl": 60}
LABGATE_ONLY = {"upstream", "tokenType"}  # labgate's own fields beside VCF's


@dataclass
class VcfLab:
    """The mock appliance, labgate in front of it, and what the appliance was shown."""

    mock: VcfOperationsAppliance
    url: str
    lab: Labgate
    authorization_seen: list[str | None]
    bearers_validated: list[str]

    async def create(self, **fields: Any) -> dict[str, Any]:
        status, _, body = await admin_call(self.lab.running, "POST", "/emergency-clients", body={**NEW, **fields})
        assert status == 201, body
        assert isinstance(body, dict)
        return body

    async def call(self, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
        return await through_labgate(self.lab.running, method, f"/vcf{path}", token, body=body)


@pytest.fixture
async def vcf(tmp_path: Path, transport: str) -> AsyncIterator[VcfLab]:
    validated: list[str] = []

    async def bearer(token: str) -> Principal | None:
        """labgate's standing credential is an administrator; any other bearer token must be the mock's own."""
        validated.append(token)
        if secrets.compare_digest(token, STANDING):
            return Principal("labgate", admin=True)
        return await mock.own_bearer(token)

    mock = VcfOperationsAppliance(bearer_validator=bearer)
    seen: list[str | None] = []
    (tmp_path / "vcf.token").write_text(STANDING + "\n")
    async with app_on_loopback(noting_authorization(mock.app(), seen)) as url:
        upstream = {**vcf_upstream(url), "transport": transport,
                    "credential": {"type": "bearer", "token_file": str(tmp_path / "vcf.token")}}
        issuer = {**ISSUER, "key_refresh_interval": 1, "admin": {"username": ADMIN[0], "password_hash": ADMIN_HASH}}
        async with running_labgate(shipped_config(tmp_path, [upstream], issuer=issuer)) as lab:
            yield VcfLab(mock, url, lab, seen, validated)


def assert_refused(status: int, body: Any, expected: tuple[int, str]) -> None:
    assert (status, body["reason"]) == expected, body
    assert set(body) == {"error", "error_description", "reason", "request_id"}


# -- the management API answers in VCF's shapes ---------------------------------------------------


async def test_a_client_made_through_labgate_has_the_shape_the_appliance_gives(vcf: VcfLab) -> None:
    before = time.time()
    made = await vcf.create(roles=[{"roleName": "viewer"}])
    token = made["accessToken"]
    claims = jwt.decode(token, options={"verify_signature": False})
    assert {k: v for k, v in made.items() if k not in ("accessToken", "accessTokenExpirationDate")} == {
        "clientId": "break-glass", "clientName": "Break glass", "clientDescription": "when SSO is down",
        "accessTokenTtl": 60, "accessTokenStatus": "ACTIVE", "roles": [{"roleName": "viewer"}],
        "tokenEndpointUrl": "https://labgate.lab.example/oauth/token", "oidcIssuerUrl": "https://labgate.lab.example",
        "upstream": "vcf", "tokenType": "emergency-client-viewer",
    }
    assert made["accessTokenExpirationDate"] == claims["exp"] * 1000 and claims["exp"] - claims["iat"] == 3600
    assert before - 1 <= claims["iat"] <= time.time()

    # The same request at the appliance itself, as its administrator (labgate's credential): the same fields, typed alike.
    status, native = await direct(vcf.url, "POST", REALM_CLIENTS, STANDING, body={**NEW, "roles": [{"roleName": "viewer"}]})
    assert status == 201, native
    assert set(made) - LABGATE_ONLY == set(native)
    assert all(type(made[name]) is type(native[name]) for name in native), (made, native)
    for name in ("clientId", "clientName", "clientDescription", "accessTokenTtl", "accessTokenStatus", "roles"):
        assert made[name] == native[name], name

    for path, native_path in (("/emergency-clients/break-glass", f"{REALM_CLIENTS}/break-glass"), ("/emergency-clients", REALM_CLIENTS)):
        status, _, shown = await admin_call(vcf.lab.running, "GET", path)
        native_status, native_shown = await direct(vcf.url, "GET", native_path, STANDING)
        assert (status, native_status) == (200, 200)
        ours = shown["emergencyClients"] if "emergencyClients" in shown else [shown]
        theirs = native_shown["emergencyClients"] if "emergencyClients" in native_shown else [native_shown]
        assert [set(c) - LABGATE_ONLY for c in ours] == [set(c) for c in theirs] == [set(native) - {"accessToken"}]
        assert token not in str(shown)


# -- what a client's token reaches at the appliance ------------------------------------------------


async def test_the_token_reaches_the_suite_api_and_the_appliance_sees_only_labgates_credential(vcf: VcfLab) -> None:
    token = (await vcf.create())["accessToken"]
    alert = vcf.mock.alerts[0]["alertId"]
    for path, field in (("/suite-api/api/resources?page=0&pageSize=2", "resourceList"), ("/suite-api/api/alerts", "alerts")):
        status, body = await vcf.call("GET", path, token)
        assert status == 200 and body["pageInfo"]["totalCount"] == len(body[field]) + (1 if "pageSize=2" in path else 0)
    status, body = await vcf.call("GET", f"/suite-api/api/alerts/{alert}", token)
    assert (status, body["alertId"]) == (200, alert)
    status, body = await vcf.call("GET", "/suite-api/api/versions/current", token)
    assert (status, body["major"]) == (200, 9)
    assert vcf.authorization_seen == [f"Bearer {STANDING}"] * 4
    assert vcf.bearers_validated == [STANDING] * 4
    # The appliance itself knows nothing of labgate's tokens: labgate's credential is what lets the request in.
    assert (await direct(vcf.url, "GET", "/suite-api/api/resources", token))[0] == 401


ALERTS = "/suite-api/api/alerts"
ROLES = [
    pytest.param(
        [{"roleName": "viewer"}], "emergency-client-viewer",
        [("GET", "/suite-api/api/resources"), ("GET", ALERTS), ("GET", "/suite-api/api/versions/current")],
        [("GET", "/suite-api/api/fleet-management/iam/ssorealms", "route_not_allowed"),
         ("POST", "/suite-api/api/resources", "method_not_allowed"), ("DELETE", f"{REALM_CLIENTS}/other", "method_not_allowed"),
         ("GET", "/suite-api/internal/alerts", "route_not_allowed")],
        id="viewer-reads-resources-and-alerts"),
    pytest.param(
        [{"roleName": "iam-admin"}], "emergency-client-iam",
        [("GET", REALM_CLIENTS)],
        [("GET", "/suite-api/api/resources", "prefix_not_allowed"), ("GET", ALERTS, "prefix_not_allowed"),
         ("POST", REALM_CLIENTS, "operation_forbidden")],
        id="iam-admin-only-fleet-management-iam"),
    pytest.param(
        [{"roleName": "auditor"}], "emergency-client",
        [("GET", "/suite-api/api/resources"), ("GET", ALERTS), ("GET", REALM_CLIENTS)],
        [("GET", "/suite-api/internal/alerts", "prefix_not_allowed"), ("POST", REALM_CLIENTS, "operation_forbidden")],
        id="no-listed-role-the-ceiling"),
]


@pytest.mark.parametrize("roles, token_type, allowed, refused", ROLES)
async def test_a_roles_claim_narrows_what_reaches_the_appliance(
    vcf: VcfLab, roles: list[Any], token_type: str, allowed: list[tuple[str, str]], refused: list[tuple[str, str, str]]
) -> None:
    made = await vcf.create(roles=roles)
    assert made["tokenType"] == token_type
    for method, path in allowed:
        status, body = await vcf.call(method, path, made["accessToken"])
        assert status == 200, (path, body)
    assert vcf.mock.received == allowed
    for method, path, reason in refused:
        status, body = await vcf.call(method, path, made["accessToken"], body={} if method == "POST" else None)
        assert_refused(status, body, (403, reason))
    assert vcf.mock.received == allowed  # nothing refused was forwarded
    assert vcf.authorization_seen == [f"Bearer {STANDING}"] * len(allowed)


IAM = "/suite-api/api/fleet-management/iam"
MINTING = [  # every credential-minting IAM operation Create Emergency Client's page lists
    ("POST", f"{IAM}/ssorealms"), ("DELETE", f"{IAM}/ssorealms/realm-1"),
    ("POST", f"{IAM}/ssorealms/realm-1/api-clients"), ("PATCH", f"{IAM}/ssorealms/realm-1/api-clients/c1"),
    ("POST", f"{IAM}/ssorealms/realm-1/api-tokens"), ("POST", f"{IAM}/ssorealms/realm-1/api-tokens/t1/regenerate"),
    ("POST", f"{IAM}/ssorealms/realm-1/oauth-apps"), ("POST", f"{IAM}/ssorealms/realm-1/oauth-apps/a1/rotate-secret"),
    ("POST", f"{REALM_CLIENTS}"), ("POST", f"{REALM_CLIENTS}/other/regenerate"),
    ("POST", f"{IAM}/identity-providers"), ("POST", f"{IAM}/identity-providers/idp-1/directories/d1/sync-client"),
]


@pytest.mark.parametrize("roles", [[{"roleName": "iam-admin"}], [{"roleName": "auditor"}]], ids=["iam-admin", "ceiling"])
async def test_no_emergency_client_mints_or_kills_a_credential(vcf: VcfLab, roles: list[Any]) -> None:
    """A credential does not mint or kill credentials: refused before the appliance, whatever the client's roles."""
    made = await vcf.create(roles=roles)
    for method, path in MINTING:
        status, body = await vcf.call(method, path, made["accessToken"], body={} if method in ("POST", "PATCH") else None)
        assert_refused(status, body, (403, "operation_forbidden"))
    assert vcf.mock.received == []


async def test_regenerate_kills_the_old_token_on_its_next_request(vcf: VcfLab) -> None:
    old = (await vcf.create())["accessToken"]
    assert (await vcf.call("GET", "/suite-api/api/resources", old))[0] == 200
    status, _, regenerated = await admin_call(vcf.lab.running, "POST", "/emergency-clients/break-glass/regenerate")
    assert status == 200 and regenerated["accessTokenStatus"] == "ACTIVE"
    new = regenerated["accessToken"]
    assert_refused(*await vcf.call("GET", "/suite-api/api/resources", old), (401, "revoked"))
    assert len(vcf.mock.received) == 1
    assert (await vcf.call("GET", "/suite-api/api/resources", new))[0] == 200
    assert len(vcf.mock.received) == 2 and old not in vcf.bearers_validated and new not in vcf.bearers_validated


async def test_delete_kills_the_token_on_its_next_request(vcf: VcfLab) -> None:
    token = (await vcf.create())["accessToken"]
    assert (await vcf.call("GET", ALERTS, token))[0] == 200
    status, _, _ = await admin_call(vcf.lab.running, "DELETE", "/emergency-clients/break-glass")
    assert status == 204
    assert_refused(*await vcf.call("GET", ALERTS, token), (401, "revoked"))
    assert vcf.mock.received == [("GET", ALERTS)]


# -- a client's token never makes or kills emergency clients --------------------------------------

ADMINISTERING = [("POST", REALM_CLIENTS, {**NEW, "clientId": "minted-by-a-token"}),
                 ("POST", f"{REALM_CLIENTS}/standing/regenerate", None),
                 ("PUT", f"{REALM_CLIENTS}/standing", {"clientName": "renamed"}),
                 ("DELETE", f"{REALM_CLIENTS}/standing", None)]


@pytest.mark.parametrize("roles, reasons", [
    ([], {"operation_forbidden"}), (["iam-admin"], {"operation_forbidden"}),
    (["viewer"], {"method_not_allowed", "route_not_allowed"}),
], ids=["ceiling", "iam-admin", "viewer"])
async def test_a_token_cannot_administer_emergency_clients_at_the_appliance_or_at_labgate(
    vcf: VcfLab, roles: list[Any], reasons: set[str]
) -> None:
    # The appliance would do it for labgate's credential (an administrator): here it makes a client of its own.
    status, standing = await direct(vcf.url, "POST", REALM_CLIENTS, STANDING, body={**NEW, "clientId": "standing"})
    assert status == 201
    token = (await vcf.create(roles=roles))["accessToken"]
    forwarded = list(vcf.mock.received)
    for method, path, body in ADMINISTERING:
        got, refused = await vcf.call(method, path, token, body=body)
        assert got == 403 and refused["reason"] in reasons, (method, path, refused)
    assert vcf.mock.received == forwarded
    assert list(vcf.mock.emergency_clients) == [("vcf-sso", "standing")]
    assert vcf.mock.emergency_clients[("vcf-sso", "standing")].token == standing["accessToken"]

    for method, path in (("POST", "/emergency-clients"), ("POST", "/emergency-clients/break-glass/regenerate"),
                         ("DELETE", "/emergency-clients/break-glass")):
        status, _, refused = await admin_call(vcf.lab.running, method, path, authorization=f"Bearer {token}",
                                              body={**NEW, "clientId": "minted-by-a-token"} if path.endswith("clients") else None)
        assert_refused(status, refused, (403, "token_management_forbidden"))
    listed = (await admin_call(vcf.lab.running, "GET", "/emergency-clients"))[2]["emergencyClients"]
    assert [c["clientId"] for c in listed] == ["break-glass"]
    assert (await vcf.call("GET", REALM_CLIENTS if roles == ["iam-admin"] else ALERTS, token))[0] == 200  # still live
