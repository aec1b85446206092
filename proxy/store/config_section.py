"""Reading the config's ``store`` section; every problem is reported as ``file:line: message``.

Redis Cluster is refused here rather than failing at the first request:
labgate's atomic steps (a record and its kind's index, the two signing-key
hashes, several revocations read at once) each span several keys, which a
cluster only allows when every key hashes to one slot.  A single primary,
made highly available with Sentinel, is what labgate supports.
"""

from __future__ import annotations

import os
from pathlib import Path

from proxy.store.open import STORE_KINDS, StoreSettings
from proxy.yamlsource import FieldReader, LocatedDict

REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
CLUSTER_REFUSED = (
    "Redis Cluster is not supported: labgate's atomic steps span several keys; "
    "use one primary, with Sentinel for failover ('sentinels' and 'service_name')"
)
_KEYS = {
    "sqlite": ("type", "path", "timeout"),
    "redis": ("type", "url", "prefix", "sentinels", "service_name", "db", "timeout", "max_connections", "cluster"),
    "memory": ("type",),
}


def read_store(reader: FieldReader, root: LocatedDict, base: Path, client_connections: int) -> StoreSettings:
    """Token state: an SQLite file next to the config unless said otherwise.

    ``client_connections`` (``limits.max_connections``) sizes the Redis pool unless
    the section does: each client connection has at most one request, so one store
    call, in flight, and a request then never waits for a pooled connection.
    """
    section = reader.section(root, "store")
    if section is None:
        return StoreSettings("sqlite", (base / "labgate.db").resolve())
    kind = reader.choice(section, "type", STORE_KINDS, default="sqlite")
    reader.expect_keys(section, _KEYS[kind], f"a {kind} store")
    if kind == "redis":
        return _read_redis(reader, section, client_connections)
    if kind == "memory":
        return StoreSettings("memory")
    path = (base / os.path.expanduser(reader.string(section, "path", default="labgate.db") or "labgate.db")).resolve()
    if not path.parent.is_dir():
        reader.error(section, "path", f"the folder for the sqlite store does not exist ({path.parent})")
    return StoreSettings("sqlite", path, timeout=_timeout(reader, section))


def _read_redis(reader: FieldReader, section: LocatedDict, client_connections: int) -> StoreSettings:
    if reader.boolean(section, "cluster", default=False):
        reader.error(section, "cluster", CLUSTER_REFUSED)
    url = reader.string(section, "url")
    sentinels = _sentinels(reader, section)
    service_name = reader.string(section, "service_name")
    if url is not None and (sentinels or service_name is not None):
        reader.error(section, "url", "give either 'url' or 'sentinels' and 'service_name', not both")
    elif url is None and not (sentinels and service_name):
        reader.error(section, None, "a redis store needs 'url', or 'sentinels' and 'service_name'")
    if url is not None and "cluster" in url.partition("://")[0]:
        reader.error(section, "url", CLUSTER_REFUSED)
    elif url is not None and not url.startswith(REDIS_SCHEMES):
        reader.error(section, "url", f"redis url {url!r} must start with redis://, rediss:// or unix://")
    return StoreSettings(
        "redis",
        url=url,
        prefix=reader.string(section, "prefix", default="labgate:") or "labgate:",
        sentinels=sentinels,
        service_name=service_name,
        db=reader.integer(section, "db", default=0, minimum=0),
        timeout=_timeout(reader, section),
        max_connections=reader.integer(section, "max_connections", default=client_connections, minimum=1),
    )


def _timeout(reader: FieldReader, section: LocatedDict) -> float | None:
    if "timeout" not in section:
        return None
    return reader.number(section, "timeout", default=0.0, minimum=0.05) or None


def _sentinels(reader: FieldReader, section: LocatedDict) -> tuple[tuple[str, int], ...]:
    """``host:port`` items (``[v6]:port`` for IPv6), each checked."""
    found = []
    for text, line in reader.strings(section, "sentinels"):
        host, sep, port = text.rpartition(":")
        host = host.removeprefix("[").removesuffix("]")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            reader.problems.add(reader.file, line, f"a sentinel is host:port, not {text!r}")
            continue
        found.append((host, int(port)))
    return tuple(found)
