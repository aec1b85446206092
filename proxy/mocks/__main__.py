"""Run one mock appliance: ``python -m proxy.mocks NAME [--host H] [--port P]``.

Once it listens it prints one JSON line on stdout: the mock's name, its URL
and what a client needs to log in (accounts, and for GreenLake a freshly
created API client).  A demo script reads that line; it is also the signal
that the mock is up.  The mocks are for loopback and lab use: credentials
are fixed, well-known strings.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web

from proxy.mocks.commvault import CommvaultAppliance
from proxy.mocks.greenlake import DEFAULT_ISSUER, JWKS_PATH, GreenLakeAppliance
from proxy.mocks.hcp import DEFAULT_EXPIRES_IN, HcpAppliance
from proxy.mocks.simplivity import SimplivityAppliance
from proxy.mocks.vcf import VcfOperationsAppliance

Built = tuple[web.Application, dict[str, Any]]


def _simplivity(args: argparse.Namespace, url: str) -> Built:
    mock = SimplivityAppliance()
    return mock.app(), {"token_endpoint": f"{url}/api/oauth/token", "client": "simplivity (empty secret, HTTP Basic)",
                        "users": mock.accounts.users, "emergency": mock.accounts.emergency}


def _hcp(args: argparse.Namespace, url: str) -> Built:
    mock = HcpAppliance(expires_in=args.expires_in)
    return mock.app(), {"token_endpoint": f"{url}/auth/oauth", "local_admin": list(mock.accounts.local_admin),
                        "realms": mock.accounts.realms, "expires_in": mock.expires_in}


def _greenlake(args: argparse.Namespace, url: str) -> Built:
    mock = GreenLakeAppliance(issuer=args.issuer)
    credential = mock.create_client()
    return mock.app(), {"token_endpoint": f"{url}/as/token.oauth2", "jwks_url": f"{url}{JWKS_PATH}", "issuer": mock.issuer,
                        "client_id": credential.client_id, "client_secret": credential.client_secret}


def _vcf(args: argparse.Namespace, url: str) -> Built:
    mock = VcfOperationsAppliance()
    return mock.app(), {"acquire": f"{url}/suite-api/api/auth/token/acquire", "sso_realms": list(mock.sso_realms),
                        "users": {u.username: {"password": u.password, "roles": list(u.roles)} for u in mock.users.values()}}


def _commvault(args: argparse.Namespace, url: str) -> Built:
    mock = CommvaultAppliance(base_path=args.base_path)
    return mock.app(), {"base_url": f"{url}{mock.base_path}", "users": mock.users}


MOCKS: dict[str, Callable[[argparse.Namespace, str], Built]] = {
    "simplivity": _simplivity,
    "hcp": _hcp,
    "greenlake": _greenlake,
    "vcf": _vcf,
    "commvault": _commvault,
}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m proxy.mocks", description="Serve one mock appliance.")
    parser.add_argument("name", choices=sorted(MOCKS))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--issuer", default=DEFAULT_ISSUER, help="greenlake: the iss claim of its tokens")
    parser.add_argument("--expires-in", type=int, default=DEFAULT_EXPIRES_IN, help="hcp: token lifetime in seconds")
    parser.add_argument("--base-path", default="/commandcenter/api", help="commvault: /commandcenter/api or /webconsole/api")
    return parser.parse_args(argv)


def build(args: argparse.Namespace) -> Built:
    """The named mock's application and the JSON-able facts a client needs."""
    url = f"http://{args.host}:{args.port}"
    app, facts = MOCKS[args.name](args, url)
    return app, {"mock": args.name, "url": url, **facts}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    app, facts = build(args)
    announce = json.dumps(facts)
    web.run_app(app, host=args.host, port=args.port, access_log=None, print=lambda _: print(announce, flush=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
