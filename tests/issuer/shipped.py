"""Configs for the management API tests: the shipped vcf and commvault packs behind labgate's issuer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from tests.conftest import free_port

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
