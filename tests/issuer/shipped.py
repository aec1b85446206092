"""Configs for the management API tests: the shipped vcf and commvault packs behind labgate's issuer."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from proxy.config import load_config
from proxy.gateway.app import Gateway
from proxy.gateway.server import make_runner
from tests.conftest import RunningGateway, free_port

POLICIES = Path(__file__).resolve().parents[2] / "policies"
ISSUER = {"url": "https://labgate.lab.example", "access_token_max_lifetime": "30d"}
ROLES = [
    {"role": "viewer", "token_type": "emergency-client-viewer"},
    {"role": "iam-admin", "token_type": "emergency-client-iam"},
]
EMERGENCY = {"token_type": "emergency-client", "roles": ROLES}
SCOPES = {
    "All": "all", "Custom": "custom", "Hyperscale": "hyperscale", "1-Touch recovery": "one-touch", "Microsoft SCIM": "scim",
}


def vcf_upstream(url: str = "http://127.0.0.1:9", **source: Any) -> dict[str, Any]:
    return {
        "name": "vcf", "url": url, "path_prefix": "/vcf", "pack": "vcf",
        "token_source": {"type": "issuer", "emergency_clients": EMERGENCY, **source},
    }


def commvault_upstream(url: str = "http://127.0.0.1:9", **source: Any) -> dict[str, Any]:
    return {
        "name": "commvault", "url": url, "path_prefix": "/commvault", "pack": "commvault",
        "token_source": {"type": "issuer", "service_accounts": SCOPES, **source},
    }


def shipped_config(tmp_path: Path, upstreams: list[dict[str, Any]], **overrides: Any) -> Path:
    """A config with the shipped packs, an issuer section and a memory store, written to tmp_path."""
    document: dict[str, Any] = {
        "listen": {"address": "127.0.0.1", "port": free_port()},
        "policies": [str(POLICIES)],
        "store": {"type": "memory"},
        "issuer": ISSUER,
        "upstreams": upstreams,
    }
    document.update(overrides)
    path = tmp_path / "labgate.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
    return path


@dataclass
class Labgate:
    """A running labgate on a shipped-packs config, with its Gateway at hand (its clocks, its store)."""

    gateway: Gateway
    running: RunningGateway


@asynccontextmanager
async def running_labgate(config_path: Path) -> AsyncIterator[Labgate]:
    """Serve the config in this process on real sockets until the block ends."""
    config = load_config(config_path)
    gateway = Gateway(config)
    runner = make_runner(gateway, config)
    await runner.setup()
    try:
        await web.TCPSite(runner, config.listen.address, config.listen.port).start()
        yield Labgate(gateway, RunningGateway(config, f"http://127.0.0.1:{config.listen.port}", config.listen.port))
    finally:
        await runner.cleanup()


def move_clocks(labgate: Labgate, clock: Callable[[], float]) -> None:
    """Make the management API and the token endpoint read ``clock`` (what they mint and renew)."""
    admin, endpoint = labgate.gateway.admin, labgate.gateway.token_endpoint
    assert admin is not None and endpoint is not None
    admin.context = replace(admin.context, clock=clock)
    endpoint.clock = clock
