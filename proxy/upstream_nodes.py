"""Several nodes behind one upstream, as configured: ``nodes``, ``balance``, ``node_backoff``, ``health``.

SimpliVity federations answer on every OmniStack virtual controller, HCP for
cloud scale on each of its nodes: an upstream may list them all.  Reading and
checking happens here; :mod:`proxy.gateway.nodepool` spreads requests over them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, cast

from yarl import URL

from proxy.upstream_address import host_problem
from proxy.yamlsource import FieldReader, LocatedDict, LocatedList, parse_duration

Balance = Literal["round_robin", "least_in_flight"]
BALANCES: tuple[Balance, ...] = ("round_robin", "least_in_flight")
# A node that refused a connection or timed out is left alone this long (passive health).
DEFAULT_BACKOFF = 10.0
MAX_NODES = 64


@dataclass(frozen=True)
class HealthCheck:
    """Active checks: ``GET path`` every ``interval`` s; healthy when it answers one of ``expect`` within ``timeout``."""

    path: str
    interval: float = 10.0
    timeout: float = 2.0
    expect: tuple[int, ...] = (200,)


@dataclass(frozen=True)
class NodeSettings:
    """The nodes of one upstream; ``urls`` in the order written (the first is the upstream's ``url``)."""

    urls: tuple[URL, ...]
    balance: Balance = "round_robin"
    backoff: float = DEFAULT_BACKOFF
    health: HealthCheck | None = None


def node_label(url: URL) -> str:
    """How metrics and ``/readyz`` name a node: host and port, from the config (never a client's input)."""
    return f"{url.host}:{url.port}"


def read_nodes(reader: FieldReader, body: LocatedDict) -> NodeSettings | None:
    """``nodes`` (instead of ``url``) and its settings; None for a one-node upstream."""
    node_keys = [k for k in ("balance", "node_backoff", "health") if k in body]
    if "nodes" not in body:
        for key in node_keys:
            reader.error(body, key, f"{key} is for an upstream with nodes")
        return None
    items = reader.items(body, "nodes", required=True)
    if items is None:
        return None
    urls: list[URL] = []
    for index, item in enumerate(items):
        node = _node_url(reader, items, index, item)
        if node is None:
            continue
        if urls and node.scheme != urls[0].scheme:
            reader.error(items, index, "every node must use the same scheme as the first (one tls setting serves them all)")
        elif urls and node.raw_path != urls[0].raw_path:
            reader.error(items, index, "every node must have the same base path as the first")
        elif node in urls:
            reader.error(items, index, f"node {str(node)!r} is listed twice")
        else:
            urls.append(node)
    if not items or len(items) > MAX_NODES:
        reader.error(body, "nodes", f"nodes must list from 1 to {MAX_NODES} URLs")
    balance = reader.choice(body, "balance", BALANCES, default="round_robin")
    backoff = _seconds(reader, body, "node_backoff", DEFAULT_BACKOFF)
    if not urls:
        return None
    return NodeSettings(tuple(urls), cast(Balance, balance), backoff, _read_health(reader, body))


def _read_health(reader: FieldReader, body: LocatedDict) -> HealthCheck | None:
    section = reader.section(body, "health")
    if section is None:
        return None
    reader.expect_keys(section, ("path", "interval", "timeout", "expect"), "health")
    path = reader.string(section, "path", required=True)
    if path is not None and (not path.startswith("/") or any(c in path for c in " #\r\n")):
        reader.error(section, "path", f"health path {path!r} must start with '/' and hold no spaces or '#'")
    interval = _seconds(reader, section, "interval", 10.0)
    timeout = _seconds(reader, section, "timeout", 2.0)
    if timeout >= interval:
        reader.error(section, "timeout", "health timeout must be shorter than its interval")
    expect = section.get("expect", [200])
    codes = expect if isinstance(expect, list) else [expect]
    if not codes or not all(isinstance(c, int) and not isinstance(c, bool) and 100 <= c <= 599 for c in codes):
        reader.error(section, "expect", "health expect must be a status code or a list of them (100-599)")
        codes = [200]
    if path is None:
        return None
    return HealthCheck(path, interval, timeout, tuple(codes))


def _seconds(reader: FieldReader, section: LocatedDict, key: str, default: float) -> float:
    if not reader.given(section, key, required=False):
        return default
    try:
        return parse_duration(section[key])
    except ValueError as exc:
        reader.error(section, key, f"{key}: {exc}")
        return default


def _node_url(reader: FieldReader, items: LocatedList, index: int, item: object) -> URL | None:
    """The same rules as an upstream's ``url``: http or https, a host, no query, fragment or credentials."""
    if not isinstance(item, str) or not item:
        reader.error(items, index, "each node must be a URL string")
        return None
    try:
        url = URL(item)
    except ValueError as exc:
        reader.error(items, index, f"bad node url {item!r}: {exc}")
        return None
    if url.scheme not in ("http", "https") or not url.host:
        reader.error(items, index, f"node url {item!r} must be http:// or https:// with a host")
        return None
    problem = host_problem(url.raw_host or url.host)
    if problem is not None:
        reader.error(items, index, f"node url {item!r}: {problem}")
        return None
    if url.query_string or url.fragment or url.user or url.password:
        reader.error(items, index, f"node url {item!r} must not carry a query, fragment or credentials")
        return None
    return url.with_path(url.raw_path.rstrip("/") or "/", encoded=True)
