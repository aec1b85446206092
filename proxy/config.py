"""The labgate configuration file, read once into frozen dataclasses.

One YAML file names the listener, the policy packs, trusted proxies, limits and
the upstream appliances with their token sources.  Every mistake is reported as
``file:line: message`` and a config with any mistake is refused whole: labgate
never starts (or reloads) on a config it half understood.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from proxy.config_upstreams import TOKEN_HEADERS, TRANSPORTS, Upstream, UpstreamTls, read_file, read_upstreams

__all__ = ["Config", "Upstream", "UpstreamTls", "TOKEN_HEADERS", "TRANSPORTS", "load_config"]
from proxy.ipaddrs import AddressSet, ForwardedHeader
from proxy.issuer.settings import IssuerSettings, check_issuer_paths, read_issuer
from proxy.policy.compile import CompiledPack, compile_pack
from proxy.policy.load import load_pack_file, read_address_set
from proxy.policy.model import parse_path_template
from proxy.store.config_section import read_store
from proxy.store.open import StoreSettings
from proxy.yamlsource import (
    ConfigError,
    FieldReader,
    LocatedDict,
    Problems,
    load_yaml_file,
)


@dataclass(frozen=True)
class ServerTls:
    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class Listen:
    address: str = "127.0.0.1"
    port: int = 8080
    tls: ServerTls | None = None
    allow_plaintext: bool = False

    @property
    def is_loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.address).is_loopback
        except ValueError:
            return self.address == "localhost"


@dataclass(frozen=True)
class Limits:
    """Bounds on what a client may send: header and line sizes, the whole head, bodies, parameters, time."""

    max_header_bytes: int = 16384
    max_line_bytes: int = 8190
    max_body_bytes: int = 2 * 1024**3
    max_query_params: int = 256
    header_timeout: float = 10.0
    body_timeout: float = 60.0
    # The whole request head (request line and every header) before anything is decided,
    # and the connections held at once: together they bound the memory unauthenticated
    # clients can hold (docs/concepts/forwarding.md, limits).
    max_header_block_bytes: int = 65536
    max_connections: int = 1024


@dataclass(frozen=True)
class Endpoints:
    """labgate's own paths, answered before (and outside) any policy."""

    health: str = "/healthz"
    ready: str = "/readyz"
    metrics: str = "/metrics"
    # Off unless set: it answers policy questions about other clients' requests
    # (docs/how-to/forward-auth.md).
    forward_auth: str | None = None

    def all(self) -> tuple[str, ...]:
        return (self.health, self.ready, self.metrics) + ((self.forward_auth,) if self.forward_auth else ())


@dataclass(frozen=True)
class ReloadSettings:
    """``reload``: SIGHUP always reloads; ``watch`` also polls the config and pack files every ``interval`` s."""

    watch: bool = True
    interval: float = 1.0


@dataclass(frozen=True)
class ShutdownSettings:
    """``shutdown``: how long requests in flight may still finish after SIGTERM before they are cut."""

    drain_seconds: float = 30.0


@dataclass(frozen=True)
class Config:
    file: Path
    listen: Listen
    packs: Mapping[str, CompiledPack]
    upstreams: tuple[Upstream, ...]
    trusted_proxies: AddressSet
    client_ip_header: ForwardedHeader = "x-forwarded-for"
    limits: Limits = field(default_factory=Limits)
    endpoints: Endpoints = field(default_factory=Endpoints)
    decision_log: str = "all"
    store: StoreSettings = field(default_factory=StoreSettings)
    reload: ReloadSettings = field(default_factory=ReloadSettings)
    shutdown: ShutdownSettings = field(default_factory=ShutdownSettings)
    policy_paths: tuple[Path, ...] = ()  # the ``policies`` entries, resolved: what a reload watches
    issuer: IssuerSettings | None = None  # labgate issues its own tokens (docs/concepts/token-service.md)

    def upstream(self, name: str) -> Upstream | None:
        return next((u for u in self.upstreams if u.name == name), None)


TOP_KEYS = (
    "listen", "store", "policies", "trusted_proxies", "client_ip_header", "limits", "endpoints", "upstreams",
    "decision_log", "reload", "shutdown", "issuer",
)


def load_config(path: str | Path) -> Config:
    """Read, validate and compile a config and every pack it names."""
    file = Path(path)
    document = load_yaml_file(file)
    problems = Problems()
    reader = FieldReader(str(file), problems)
    if not isinstance(document, LocatedDict):
        problems.add(str(file), 1, "the config must be a mapping")
        problems.raise_if_any()
    root = cast(LocatedDict, document)
    reader.expect_keys(root, TOP_KEYS, "the config")
    base = file.parent
    packs, broken_packs = _read_policies(reader, root, base)
    issuer = read_issuer(reader, root, base)
    upstreams = read_upstreams(reader, root, base, packs, issuer, broken_packs)
    limits = _read_limits(reader, root)
    config = Config(
        file=file,
        listen=_read_listen(reader, root, base),
        packs=packs,
        upstreams=upstreams,
        trusted_proxies=read_address_set(reader, root, "trusted_proxies") or AddressSet.parse([]),
        client_ip_header=cast(
            ForwardedHeader,
            reader.choice(root, "client_ip_header", ("x-forwarded-for", "forwarded"), default="x-forwarded-for"),
        ),
        limits=limits,
        endpoints=_read_endpoints(reader, root),
        decision_log=reader.choice(root, "decision_log", ("all", "denials", "off"), default="all"),
        store=read_store(reader, root, base, limits.max_connections),
        reload=_read_reload(reader, root),
        shutdown=_read_shutdown(reader, root),
        policy_paths=tuple(
            (base / os.path.expanduser(text)).resolve() for text in root.get("policies") or () if isinstance(text, str)
        ),
        issuer=issuer,
    )
    _check_routing(reader, root, config)
    _check_forward_auth(reader, root, config)
    check_issuer_paths(
        reader, root, config.endpoints.all(), [(i, u.path_prefix) for i, u in enumerate(config.upstreams) if u.path_prefix],
        issuer.admin.prefix if issuer is not None and issuer.admin is not None else None,
    )
    problems.raise_if_any()
    return config


def _read_listen(reader: FieldReader, root: LocatedDict, base: Path) -> Listen:
    section = reader.section(root, "listen")
    if section is None:
        return Listen()
    reader.expect_keys(section, ("address", "port", "tls", "allow_plaintext"), "listen")
    address = reader.string(section, "address", default="127.0.0.1") or "127.0.0.1"
    if address != "localhost":
        try:
            ipaddress.ip_address(address)
        except ValueError:
            reader.error(section, "address", f"listen address {address!r} must be an IP address or localhost")
    port = reader.integer(section, "port", default=8080, minimum=0)
    if port > 65535:
        reader.error(section, "port", f"port {port} is out of range")
    tls = None
    tls_section = reader.section(section, "tls")
    if tls_section is not None:
        reader.expect_keys(tls_section, ("cert", "key"), "listen.tls")
        cert = read_file(reader, tls_section, "cert", base, required=True)
        key = read_file(reader, tls_section, "key", base, required=True)
        if cert and key:
            tls = ServerTls(cert, key)
    listen = Listen(address, port, tls, reader.boolean(section, "allow_plaintext", default=False))
    if tls is None and not listen.is_loopback and not listen.allow_plaintext:
        reader.error(
            section,
            "address",
            "clients send bearer tokens: listening beyond loopback needs 'tls' (cert and key), "
            "or 'allow_plaintext: true' when a TLS-terminating proxy sits in front",
        )
    return listen


def _read_reload(reader: FieldReader, root: LocatedDict) -> ReloadSettings:
    section = reader.section(root, "reload")
    if section is None:
        return ReloadSettings()
    reader.expect_keys(section, ("watch", "interval"), "reload")
    return ReloadSettings(
        watch=reader.boolean(section, "watch", default=True),
        interval=reader.number(section, "interval", default=1.0, minimum=0.1),
    )


def _read_shutdown(reader: FieldReader, root: LocatedDict) -> ShutdownSettings:
    section = reader.section(root, "shutdown")
    if section is None:
        return ShutdownSettings()
    reader.expect_keys(section, ("drain_seconds",), "shutdown")
    drain = reader.number(section, "drain_seconds", default=30.0, minimum=0)
    if drain > 3600:
        reader.error(section, "drain_seconds", f"'drain_seconds' must be at most 3600, not {drain:g}")
    return ShutdownSettings(drain)


def _read_policies(reader: FieldReader, root: LocatedDict, base: Path) -> tuple[dict[str, CompiledPack], dict[str, Path]]:
    """Pack files, or folders whose ``*.yaml`` files (except ``*.tests.yaml``) are packs.

    Also the packs that did not load, by the names they may go by, with their
    files: an upstream naming one is told to fix that file, not that the pack
    is unknown.
    """
    packs: dict[str, CompiledPack] = {}
    broken: dict[str, Path] = {}
    entries = reader.strings(root, "policies")
    if "policies" not in root:
        reader.error(root, None, "missing required key 'policies' (pack files or folders)")
    items = root.get("policies")
    for index, (text, _line) in enumerate(entries):
        target = (base / os.path.expanduser(text)).resolve()
        if target.is_dir():
            files = sorted(p for p in target.glob("*.yaml") if not p.name.endswith(".tests.yaml"))
        elif target.is_file():
            files = [target]
        else:
            reader.error(items, index, f"policy path {text!r} does not exist (looked at {target})")
            continue
        for pack_file in files:
            try:
                pack = load_pack_file(pack_file)
            except ConfigError as exc:
                reader.problems.items.extend(exc.problems)
                broken.update(dict.fromkeys(_pack_names_of(pack_file), pack_file))
                continue
            if pack.name in packs:
                reader.error(items, index, f"pack {pack.name!r} is defined twice ({packs[pack.name].pack.file} and {pack_file})")
                continue
            packs[pack.name] = compile_pack(pack)
    return packs, broken


def _pack_names_of(pack_file: Path) -> set[str]:
    """The names a pack file that failed to load may go by: its ``pack:`` value if readable, and its file stem."""
    names = {pack_file.stem}
    try:
        document = load_yaml_file(pack_file)
    except ConfigError:
        return names
    if isinstance(document, LocatedDict) and isinstance(document.get("pack"), str):
        names.add(document["pack"])
    return names


def _read_limits(reader: FieldReader, root: LocatedDict) -> Limits:
    section = reader.section(root, "limits")
    if section is None:
        return Limits()
    defaults = Limits()
    reader.expect_keys(section, tuple(Limits.__dataclass_fields__), "limits")
    return Limits(
        max_header_bytes=reader.integer(section, "max_header_bytes", default=defaults.max_header_bytes, minimum=1024),
        max_line_bytes=reader.integer(section, "max_line_bytes", default=defaults.max_line_bytes, minimum=256),
        max_body_bytes=reader.integer(section, "max_body_bytes", default=defaults.max_body_bytes, minimum=0),
        max_query_params=reader.integer(section, "max_query_params", default=defaults.max_query_params, minimum=1),
        header_timeout=reader.number(section, "header_timeout", default=defaults.header_timeout, minimum=0.1),
        body_timeout=reader.number(section, "body_timeout", default=defaults.body_timeout, minimum=0.1),
        max_header_block_bytes=reader.integer(
            section, "max_header_block_bytes", default=defaults.max_header_block_bytes, minimum=4096
        ),
        max_connections=reader.integer(section, "max_connections", default=defaults.max_connections, minimum=1),
    )


def _read_endpoints(reader: FieldReader, root: LocatedDict) -> Endpoints:
    section = reader.section(root, "endpoints")
    if section is None:
        return Endpoints()
    reader.expect_keys(section, ("health", "ready", "metrics", "forward_auth"), "endpoints")
    values = {}
    for key, default in (("health", "/healthz"), ("ready", "/readyz"), ("metrics", "/metrics")):
        value = reader.string(section, key, default=default) or default
        _check_endpoint_path(reader, section, key, value)
        values[key] = value
    forward_auth = reader.string(section, "forward_auth")
    if forward_auth is not None:
        _check_endpoint_path(reader, section, "forward_auth", forward_auth)
    paths = [*values.values(), *([forward_auth] if forward_auth else [])]
    if len(set(paths)) != len(paths):
        reader.error(section, None, "health, ready, metrics and forward_auth endpoints must differ")
    return Endpoints(**values, forward_auth=forward_auth)


def _check_endpoint_path(reader: FieldReader, section: LocatedDict, key: str, value: str) -> None:
    try:
        parse_path_template(value, what=f"endpoints.{key}", params=False)
    except ValueError as exc:
        reader.error(section, key, str(exc))


def _check_forward_auth(reader: FieldReader, root: LocatedDict, config: Config) -> None:
    """The forward-auth endpoint answers only trusted proxies: without any, it could answer no one."""
    if config.endpoints.forward_auth and len(config.trusted_proxies) == 0:
        reader.error(
            root.get("endpoints"),
            "forward_auth",
            "endpoints.forward_auth answers only peers in trusted_proxies: list the proxy that asks (e.g. 127.0.0.1)",
        )


def _check_routing(reader: FieldReader, root: LocatedDict, config: Config) -> None:
    """Every request must reach at most one upstream, and never shadow labgate's own paths."""
    items = root.get("upstreams")
    seen: dict[tuple[str | None, str | None], str] = {}
    for index, upstream in enumerate(config.upstreams):
        key = (upstream.host, upstream.path_prefix)
        if key in seen:
            reader.error(items, index, f"upstream {upstream.name!r} is reached exactly like {seen[key]!r} (same host and path_prefix)")
        seen[key] = upstream.name
        for own in config.endpoints.all():
            if upstream.path_prefix and (own == upstream.path_prefix or own.startswith(upstream.path_prefix + "/")):
                reader.error(items, index, f"path_prefix {upstream.path_prefix!r} would hide labgate's own {own}")
