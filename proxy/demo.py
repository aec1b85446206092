"""``labgate demo``: the lab in one command.

Starts the mock appliances (:mod:`proxy.mocks`) on the loopback ports the lab
config names, labgate itself on that config (``deploy/examples/lab.yaml``), and
walks through each family once: a token obtained, an allowed request, a denied
one with its reason.  It prints what it saw next to ready-to-paste ``curl``
lines that do the same, then serves until Ctrl-C.  ``--check`` stops after the
walk-through, exit 0 when every family behaved as its pack says, 1 otherwise.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import signal
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from proxy.config import Config, Upstream
from proxy.gateway.reload import ReloadingGateway
from proxy.gateway.server import make_runner
from proxy.mocks.commvault import CommvaultAppliance
from proxy.mocks.greenlake import GreenLakeAppliance
from proxy.mocks.hcp import HcpAppliance
from proxy.mocks.simplivity import CLIENT_BASIC, SimplivityAppliance
from proxy.mocks.vcf import Principal, VcfOperationsAppliance
from proxy.tokens.jwt_source import JwtSourceSettings

logger = logging.getLogger("labgate")

LAB_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "examples" / "lab.yaml"


@dataclass(frozen=True)
class Step:
    """One request of a walk-through: what it shows, the curl line that repeats it, what it must answer."""

    title: str
    curl: str
    status: int
    reason: str | None = None  # the labgate reason code a denial must carry


@dataclass(frozen=True)
class Outcome:
    step: Step
    status: int
    reason: str | None

    @property
    def as_expected(self) -> bool:
        return self.status == self.step.status and (self.step.reason is None or self.reason == self.step.reason)


@dataclass
class Family:
    """A mock appliance for one upstream, and the walk-through that shows its pack at work."""

    upstream: Upstream
    app: web.Application
    walk: Callable[[Lab, aiohttp.ClientSession], Awaitable[list[Outcome]]]


class Lab:
    """The running lab: the config, labgate's URL, and what each walk-through needs to know."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.url = f"http://{config.listen.address}:{config.listen.port}"
        self.greenlake: GreenLakeAppliance | None = None

    def at(self, upstream: Upstream, path: str) -> str:
        return f"{self.url}{upstream.path_prefix or ''}{path}"


async def _call(
    session: aiohttp.ClientSession, step: Step, method: str, url: str, **kwargs: Any
) -> tuple[Outcome, Any]:
    async with session.request(method, url, **kwargs) as response:
        try:
            body = await response.json(content_type=None)
        except ValueError:  # not JSON: the status says enough
            body = None
        reason = response.headers.get("X-Labgate-Reason") or (body.get("reason") if isinstance(body, dict) else None)
        return Outcome(step, response.status, reason if response.status >= 400 else None), body


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _with_token(
    session: aiohttp.ClientSession, token: str, *calls: tuple[Step, str, str, Any]
) -> list[Outcome]:
    """Each ``(step, method, url, json body or None)`` sent with ``token`` as the bearer token."""
    return [(await _call(session, step, method, url, headers=_bearer(token), json=body))[0] for step, method, url, body in calls]


_JSON_TOKEN = "python3 -c 'import json,sys; print(json.load(sys.stdin)[\"access_token\"])'"


async def _simplivity(lab: Lab, session: aiohttp.ClientSession, upstream: Upstream) -> list[Outcome]:
    token_url = lab.at(upstream, "/api/oauth/token")
    get = Step(
        "an emergency token from the appliance's own token endpoint (labgate learns its type from the grant)",
        f"SVT=$(curl -s -u simplivity: {token_url} -d grant_type=emergency -d username=svtcli -d password=svtcli-pw | {_JSON_TOKEN})",
        200,
    )
    got, body = await _call(session, get, "POST", token_url, headers={"Authorization": CLIENT_BASIC},
                            data={"grant_type": "emergency", "username": "svtcli", "password": "svtcli-pw"})
    token = body.get("access_token", "") if isinstance(body, dict) else ""
    allowed = Step(
        "allowed: list hosts, paged", f"curl -s -H \"Authorization: Bearer $SVT\" '{lab.at(upstream, '/api/hosts?limit=10')}'", 200
    )
    denied = Step(
        "denied: an emergency token cannot sort",
        f"curl -s -H \"Authorization: Bearer $SVT\" '{lab.at(upstream, '/api/hosts?sort=name')}'",
        403,
        "query_param_not_allowed",
    )
    return [got, *await _with_token(session, token, (allowed, "GET", lab.at(upstream, "/api/hosts?limit=10"), None),
                                    (denied, "GET", lab.at(upstream, "/api/hosts?sort=name"), None))]


async def _hcp(lab: Lab, session: aiohttp.ClientSession, upstream: Upstream) -> list[Outcome]:
    token_url = lab.at(upstream, "/auth/oauth/")
    form = {"grant_type": "password", "username": "user1", "password": "password1", "scope": "*",
            "client_id": "my-client", "client_secret": "my-secret", "realm": "marketingUsers"}
    get = Step(
        "a password-grant token for a realm user (labgate learns it from HCP's answer)",
        f"HCP=$(curl -s {token_url} "
        + " ".join(f"-d {k}={v!r}" if k == "scope" else f"-d {k}={v}" for k, v in form.items())
        + f" | {_JSON_TOKEN})",
        200,
    )
    got, body = await _call(session, get, "POST", token_url, data=form)
    token = body.get("access_token", "") if isinstance(body, dict) else ""
    list_url = lab.at(upstream, "/mapi/v1/user/list")
    allowed = Step(
        "allowed: an Object Storage MAPI call (POST)",
        f"curl -s -X POST -H \"Authorization: Bearer $HCP\" -H 'Content-Type: application/json' -d '{{\"count\": 10}}' {list_url}",
        200,
    )
    denied = Step("denied: the MAPI takes POST only", f"curl -s -H \"Authorization: Bearer $HCP\" {list_url}", 403, "method_not_allowed")
    return [got, *await _with_token(session, token, (allowed, "POST", list_url, {"count": 10}), (denied, "GET", list_url, None))]


async def _greenlake(lab: Lab, session: aiohttp.ClientSession, upstream: Upstream) -> list[Outcome]:
    assert lab.greenlake is not None
    credential = lab.greenlake.create_client()
    sso = f"{upstream.url.origin()}/as/token.oauth2"
    get = Step(
        "a client-credentials JWT from GreenLake's SSO (labgate checks it against the SSO's key set)",
        f"GL=$(curl -s {sso} -d grant_type=client_credentials -d client_id={credential.client_id} "
        f"-d client_secret={credential.client_secret} | {_JSON_TOKEN})",
        200,
    )
    got, body = await _call(session, get, "POST", sso, data={"grant_type": "client_credentials",
                                                          "client_id": credential.client_id, "client_secret": credential.client_secret})
    token = body.get("access_token", "") if isinstance(body, dict) else ""
    servers = lab.at(upstream, "/compute-ops-mgmt/v1/servers?limit=5")
    other = lab.at(upstream, "/api/accounts")
    allowed = Step("allowed: list servers", f"curl -s -H \"Authorization: Bearer $GL\" '{servers}'", 200)
    denied = Step("denied: outside Compute Ops Management", f"curl -s -H \"Authorization: Bearer $GL\" {other}", 403, "prefix_not_allowed")
    return [got, *await _with_token(session, token, (allowed, "GET", servers, None), (denied, "GET", other, None))]


ADMIN = ("admin", "lab-admin-pw")  # deploy/examples/lab.yaml's lab-only management API login


def _admin(lab: Lab) -> tuple[aiohttp.BasicAuth | None, str]:
    """HTTP Basic for labgate's management API (``issuer.admin``), and its URL prefix."""
    admin = lab.config.issuer.admin if lab.config.issuer is not None else None
    prefix = admin.prefix if admin is not None else "/-/admin"
    return aiohttp.BasicAuth(*ADMIN), f"{lab.url}{prefix}"


async def _vcf(lab: Lab, session: aiohttp.ClientSession, upstream: Upstream) -> list[Outcome]:
    auth, admin = _admin(lab)
    create = f"{admin}/emergency-clients"
    body = {"clientId": f"demo-{secrets.token_hex(4)}", "clientName": "Demo viewer", "accessTokenTtl": 60,
            "roles": [{"roleName": "viewer"}], "upstream": upstream.name}
    get = Step(
        "an emergency client made through labgate's management API; its viewer role narrows its token",
        f"VCF=$(curl -s -u {ADMIN[0]}:{ADMIN[1]} -H 'Content-Type: application/json' {create} -d '{{\"clientId\": \"paste-'$RANDOM'\", "
        f"\"clientName\": \"Pasted viewer\", \"accessTokenTtl\": 60, \"roles\": [{{\"roleName\": \"viewer\"}}]}}' "
        f"| python3 -c 'import json,sys; print(json.load(sys.stdin)[\"accessToken\"])')",
        201,
    )
    got, answer = await _call(session, get, "POST", create, auth=auth, json=body)
    token = answer.get("accessToken", "") if isinstance(answer, dict) else ""
    resources = lab.at(upstream, "/suite-api/api/resources")
    realms = lab.at(upstream, "/suite-api/api/fleet-management/iam/ssorealms")
    allowed = Step(
        "allowed: read resources (labgate forwards with its own credential)", f"curl -s -H \"Authorization: Bearer $VCF\" {resources}", 200
    )
    denied = Step(
        "denied: a viewer cannot reach fleet-management IAM",
        f"curl -s -H \"Authorization: Bearer $VCF\" {realms}",
        403,
        "route_not_allowed",
    )
    return [got, *await _with_token(session, token, (allowed, "GET", resources, None), (denied, "GET", realms, None))]


async def _commvault(lab: Lab, session: aiohttp.ClientSession, upstream: Upstream) -> list[Outcome]:
    auth, admin = _admin(lab)
    account = f"svc-demo-{secrets.token_hex(4)}"
    subject = Step(
        "a service account (a subject of labgate's token service)",
        f"curl -s -u {ADMIN[0]}:{ADMIN[1]} -H 'Content-Type: application/json' {admin}/subjects -d '{{\"name\": \"svc-backup\"}}'",
        201,
    )
    made, _ = await _call(session, subject, "POST", f"{admin}/subjects", auth=auth, json={"name": account})
    tokens = f"{admin}/service-accounts/{{name}}/tokens"
    get = Step(
        "a Custom-scope service-account token that may reach /Client only",
        f"CV=$(curl -s -u {ADMIN[0]}:{ADMIN[1]} -H 'Content-Type: application/json' {tokens.format(name='svc-backup')} "
        f"-d '{{\"tokenName\": \"clients\", \"scope\": \"Custom\", \"apiEndpoints\": \"/Client\"}}' "
        f"| python3 -c 'import json,sys; print(json.load(sys.stdin)[\"tokenInfo\"][\"accessToken\"])')",
        201,
    )
    got, answer = await _call(session, get, "POST", tokens.format(name=account), auth=auth,
                              json={"tokenName": "clients", "scope": "Custom", "apiEndpoints": "/Client", "upstream": upstream.name})
    info = answer.get("tokenInfo", {}) if isinstance(answer, dict) else {}
    token = info.get("accessToken", "") if isinstance(info, dict) else ""
    clients, plans = lab.at(upstream, "/Client"), lab.at(upstream, "/V2/Plan")
    allowed = Step("allowed: list clients", f"curl -s -H \"Authorization: Bearer $CV\" {clients}", 200)
    denied = Step("denied: /Client does not open /V2/Plan", f"curl -s -H \"Authorization: Bearer $CV\" {plans}", 403, "prefix_not_allowed")
    return [made, got, *await _with_token(session, token, (allowed, "GET", clients, None), (denied, "GET", plans, None))]


WALKS: dict[str, Callable[[Lab, aiohttp.ClientSession, Upstream], Awaitable[list[Outcome]]]] = {
    "simplivity": _simplivity,
    "hcp": _hcp,
    "greenlake": _greenlake,
    "vcf": _vcf,
    "commvault": _commvault,
}


def _mock_app(lab: Lab, upstream: Upstream) -> web.Application:
    if upstream.name == "simplivity":
        return SimplivityAppliance().app()
    if upstream.name == "hcp":
        return HcpAppliance().app()
    if upstream.name == "greenlake":
        source = upstream.token_source
        issuer = source.issuer if isinstance(source, JwtSourceSettings) and source.issuer else None
        lab.greenlake = GreenLakeAppliance(issuer=issuer) if issuer else GreenLakeAppliance()
        return lab.greenlake.app()
    if upstream.name == "vcf":
        standing = _credential_token(upstream)

        async def bearer(token: str) -> Principal | None:
            if secrets.compare_digest(token, standing):
                return Principal("labgate", admin=True)
            return await vcf.own_bearer(token)

        vcf = VcfOperationsAppliance(bearer_validator=bearer)
        return vcf.app()
    if upstream.name == "commvault":
        commvault = CommvaultAppliance(base_path=upstream.url.path)
        commvault.add_standing_token(_credential_token(upstream))
        return commvault.app()
    raise ValueError(f"the demo has no mock appliance for upstream {upstream.name!r}")


def _credential_token(upstream: Upstream) -> str:
    """The bearer credential labgate holds for this upstream: the mock is told to accept it."""
    credential = upstream.credential
    token = getattr(credential, "token", None)
    if not isinstance(token, str) or not token:
        raise ValueError(f"upstream {upstream.name!r} needs a bearer credential for the demo's mock")
    return token


async def _start_mocks(lab: Lab) -> list[web.AppRunner]:
    runners: list[web.AppRunner] = []
    try:
        for upstream in lab.config.upstreams:
            runner = web.AppRunner(_mock_app(lab, upstream), access_log=None)
            await runner.setup()
            runners.append(runner)
            await web.TCPSite(runner, upstream.url.host, upstream.url.port).start()
    except BaseException:
        for runner in runners:
            await runner.cleanup()
        raise
    return runners


def _print_walk(upstream: Upstream, outcomes: list[Outcome]) -> None:
    print(f"\n## {upstream.name} (pack {upstream.pack})")
    for outcome in outcomes:
        seen = f"{outcome.status}" + (f" {outcome.reason}" if outcome.reason else "")
        mark = "ok" if outcome.as_expected else f"UNEXPECTED (wanted {outcome.step.status} {outcome.step.reason or ''})"
        print(f"# {outcome.step.title}: {seen} [{mark}]")
        print(outcome.step.curl)


async def run_demo(config: Config, *, check: bool) -> int:
    """Serve the lab; with ``check``, walk through each family once and stop."""
    lab = Lab(config)
    unknown = [u.name for u in config.upstreams if u.name not in WALKS]
    if unknown:
        print(f"the demo has no mock appliance for upstream(s) {', '.join(unknown)}")
        return 2
    mocks = await _start_mocks(lab)
    gateway = ReloadingGateway(config)
    runner = make_runner(gateway, config)
    try:
        await runner.setup()
        await web.TCPSite(runner, config.listen.address, config.listen.port).start()
        print(f"labgate demo: labgate on {lab.url}, mock appliances: " + ", ".join(f"{u.name} {u.url.origin()}" for u in config.upstreams))
        every_outcome: list[Outcome] = []
        async with aiohttp.ClientSession() as session:
            for upstream in config.upstreams:
                outcomes = await WALKS[upstream.name](lab, session, upstream)
                _print_walk(upstream, outcomes)
                every_outcome += outcomes
        good = all(o.as_expected for o in every_outcome)
        print(f"\n{sum(o.as_expected for o in every_outcome)} of {len(every_outcome)} steps as the packs say.")
        if check:
            return 0 if good else 1
        print("Serving until Ctrl-C; paste the curl lines above into another shell.", flush=True)
        await _until_stopped()
        return 0
    finally:
        gateway.stop_reloading()
        await runner.cleanup()
        for mock in mocks:
            await mock.cleanup()


async def _until_stopped() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    print("\nlabgate demo: stopping", flush=True)
