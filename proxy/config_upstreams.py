"""The ``upstreams`` section: one appliance API each, read into frozen dataclasses.

Split from :mod:`proxy.config` (which re-exports :class:`Upstream`) so each
module stays small: the listener, limits and policies there, every key of an
upstream here, each mistake at its ``file:line``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from yarl import URL

from proxy.credentials.settings import CredentialSettings, read_credential
from proxy.issuer.settings import IssuerSettings
from proxy.policy.compile import CompiledPack
from proxy.policy.load import NAME, read_header_rules
from proxy.policy.model import HeaderRules, parse_path_template
from proxy.policy.rates import DEFAULT_QUEUE_TIMEOUT, RateLimit, read_in_flight, read_rate_limit
from proxy.tokens.settings import TokenSourceSettings, read_token_source
from proxy.upstream_address import read_upstream_host, read_upstream_url
from proxy.upstream_nodes import NodeSettings, read_nodes
from proxy.yamlsource import FieldReader, LocatedDict


@dataclass(frozen=True)
class UpstreamTls:
    """TLS towards an appliance: verify on (default), off (self-signed lab gear), or a CA file."""

    verify: bool = True
    ca_file: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None


@dataclass(frozen=True)
class Upstream:
    name: str
    url: URL
    pack: str
    token_source: TokenSourceSettings
    path_prefix: str | None = None
    host: str | None = None
    tls: UpstreamTls = field(default_factory=UpstreamTls)
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    transport: str = "http1"  # http1 (lean, default) or aiohttp (aiohttp's ClientSession)
    credential: CredentialSettings | None = None  # what labgate authenticates to the appliance with
    # Where clients put their token (docs/concepts/forwarding.md): ``bearer`` (RFC 6750), ``authtoken``
    # (Commvault's ``Authtoken`` header) or ``opstoken`` (VCF Operations' ``Authorization: OpsToken``).
    token_header: str = "bearer"
    headers: HeaderRules | None = None  # client headers the appliance may see, on top of the pack's
    # Protecting the appliance (docs/concepts/protecting-appliances.md): one budget for every client
    # together, and at most ``max_in_flight`` requests at the appliance at once, the rest waiting
    # up to ``queue_timeout`` seconds for a place.
    rate_limit: RateLimit | None = None
    max_in_flight: int | None = None
    queue_timeout: float = DEFAULT_QUEUE_TIMEOUT
    # Several nodes (``nodes`` instead of ``url``; ``url`` is then the first): docs/concepts/protecting-appliances.md.
    nodes: NodeSettings | None = None


def read_file(reader: FieldReader, section: LocatedDict, key: str, base: Path, *, required: bool = False) -> Path | None:
    """A path relative to the config file; it must exist and be readable now."""
    text = reader.string(section, key, required=required)
    if text is None:
        return None
    path = (base / os.path.expanduser(text)).resolve()
    if not path.is_file():
        reader.error(section, key, f"{key}: file {text!r} does not exist (looked at {path})")
        return None
    return path


UPSTREAM_KEYS = (
    "name", "url", "path_prefix", "host", "pack", "tls", "timeouts", "transport", "token_source", "credential",
    "token_header", "headers", "rate_limit", "max_in_flight", "queue_timeout",
    "nodes", "balance", "node_backoff", "health",
)
TRANSPORTS = ("http1", "aiohttp")
TOKEN_HEADERS = ("bearer", "authtoken", "opstoken")


def read_upstreams(
    reader: FieldReader,
    root: LocatedDict,
    base: Path,
    packs: Mapping[str, CompiledPack],
    issuer: IssuerSettings | None,
    broken_packs: Mapping[str, Path],
) -> tuple[Upstream, ...]:
    items = reader.items(root, "upstreams", required=True)
    if items is None:
        return ()
    if not items:
        reader.error(root, "upstreams", "at least one upstream is needed")
    upstreams: list[Upstream] = []
    names: set[str] = set()
    for index, body in enumerate(items):
        if not isinstance(body, LocatedDict):
            reader.error(items, index, "each upstream must be a mapping")
            continue
        upstream = _read_upstream(reader, body, base, packs, issuer, broken_packs)
        if upstream is None:
            continue
        if upstream.name in names:
            reader.error(body, "name", f"upstream name {upstream.name!r} is used twice")
        names.add(upstream.name)
        upstreams.append(upstream)
    return tuple(upstreams)


def _read_upstream(
    reader: FieldReader,
    body: LocatedDict,
    base: Path,
    packs: Mapping[str, CompiledPack],
    issuer: IssuerSettings | None,
    broken_packs: Mapping[str, Path],
) -> Upstream | None:
    reader.expect_keys(body, UPSTREAM_KEYS, "an upstream")
    name = reader.string(body, "name", required=True)
    if name and not NAME.fullmatch(name):
        reader.error(body, "name", f"upstream name {name!r} must be lowercase letters, digits, '-' or '_'")
    nodes = read_nodes(reader, body)
    if "nodes" in body and body.get("url") is not None:
        reader.error(body, "nodes", "give url (one node) or nodes, not both")
    url = nodes.urls[0] if nodes is not None else None if "nodes" in body else read_upstream_url(reader, body)
    prefix = reader.string(body, "path_prefix")
    if prefix is not None:
        try:
            if not parse_path_template(prefix, what=f"path_prefix {prefix!r}", params=False):
                reader.error(body, "path_prefix", "path_prefix '/' would capture every path: omit it instead")
        except ValueError as exc:
            reader.error(body, "path_prefix", str(exc))
    host = read_upstream_host(reader, body)
    pack_name = reader.string(body, "pack", required=True)
    pack = packs.get(pack_name or "")
    if pack_name and pack_name in broken_packs:
        reader.error(body, "pack", f"pack {pack_name!r} did not load: fix the problems reported in {broken_packs[pack_name]} first")
    elif pack_name and pack is None:
        known = ", ".join(sorted(packs)) or "none loaded"
        reader.error(body, "pack", f"unknown pack {pack_name!r} (known: {known})")
    source = read_token_source(reader, body, base, pack, issuer)
    credential = read_credential(reader, body, base, url)
    tls = _read_upstream_tls(reader, body, base)
    connect_timeout, read_timeout = _read_timeouts(reader, body)
    transport = reader.choice(body, "transport", TRANSPORTS, default="http1")
    token_header = reader.choice(body, "token_header", TOKEN_HEADERS, default="bearer")
    headers = read_header_rules(reader, body)
    rate_limit, in_flight = read_rate_limit(reader, body, upstream=True), read_in_flight(reader, body)
    if not (name and url and pack_name and source):
        return None
    return Upstream(
        name, url, pack_name, source, prefix, host, tls, connect_timeout, read_timeout, transport, credential,
        token_header, headers, rate_limit, *in_flight, nodes,
    )


def _read_upstream_tls(reader: FieldReader, body: LocatedDict, base: Path) -> UpstreamTls:
    section = reader.section(body, "tls")
    if section is None:
        return UpstreamTls()
    reader.expect_keys(section, ("verify", "ca_file", "client_cert", "client_key"), "upstream tls")
    tls = UpstreamTls(
        verify=reader.boolean(section, "verify", default=True),
        ca_file=read_file(reader, section, "ca_file", base),
        client_cert=read_file(reader, section, "client_cert", base),
        client_key=read_file(reader, section, "client_key", base),
    )
    if tls.ca_file and not tls.verify:
        reader.error(section, "ca_file", "ca_file has no effect with verify: false")
    if bool(section.get("client_cert")) != bool(section.get("client_key")):
        reader.error(section, None, "client_cert and client_key go together")
    return tls


def _read_timeouts(reader: FieldReader, body: LocatedDict) -> tuple[float, float]:
    section = reader.section(body, "timeouts")
    if section is None:
        return 5.0, 60.0
    reader.expect_keys(section, ("connect", "read"), "timeouts")
    return (
        reader.number(section, "connect", default=5.0, minimum=0.01),
        reader.number(section, "read", default=60.0, minimum=0.01),
    )


