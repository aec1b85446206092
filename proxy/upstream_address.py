"""Where an upstream lives: its ``url`` and the ``host`` clients reach it by, checked strictly.

yarl accepts hosts that no resolver ever will (``my host``, ``bad..host``,
``-x.lab``); labgate would only find out at the first request, as an
``upstream_unreachable``. ``labgate check`` refuses them up front instead, and
says what a host may be.
"""

from __future__ import annotations

import ipaddress
import re
import socket

from yarl import URL

from proxy.yamlsource import FieldReader, LocatedDict

# RFC 1123 host names (letters, digits, hyphens; no label starts or ends with a
# hyphen), plus '_' which lab DNS zones use; labels 1-63 characters, 253 in all.
_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_NAME = re.compile(rf"(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*\.?")
HOST_RULE = "a DNS name (letters, digits, '-' and '_' in dot-separated labels) or an IP address"


def host_problem(host: str) -> str | None:
    """Why ``host`` cannot name a machine, or None when it can."""
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    if _HOST_NAME.fullmatch(host):
        return None
    if any(c.isspace() for c in host):
        return f"host {host!r} contains a space: {HOST_RULE}"
    return f"host {host!r} is not {HOST_RULE}"


def read_upstream_url(reader: FieldReader, body: LocatedDict) -> URL | None:
    """``url``: http(s), a valid host, no query, fragment or credentials; a trailing slash dropped."""
    text = reader.string(body, "url", required=True)
    if text is None:
        return None
    try:
        url = URL(text)
    except ValueError as exc:
        reader.error(body, "url", f"bad url {text!r}: {exc}")
        return None
    if url.scheme not in ("http", "https") or not url.host:
        reader.error(body, "url", f"url {text!r} must be http:// or https:// with a host")
        return None
    problem = host_problem(url.raw_host or url.host)
    if problem is not None:
        reader.error(body, "url", f"url {text!r}: {problem}")
        return None
    if url.query_string or url.fragment or url.user or url.password:
        reader.error(body, "url", f"url {text!r} must not carry a query, fragment or credentials")
        return None
    return url.with_path(url.raw_path.rstrip("/") or "/", encoded=True)


def read_upstream_host(reader: FieldReader, body: LocatedDict) -> str | None:
    """``host``: the name clients send in ``Host`` (lowercased), which must be a valid host."""
    host = reader.string(body, "host")
    if host is None:
        return None
    bracketed = host.startswith("[") and host.endswith("]")  # an IPv6 Host header: [2001:db8::1]
    problem = host_problem(host[1:-1] if bracketed else host)
    if problem is None and bracketed and ":" not in host:
        problem = f"host {host!r}: only IPv6 addresses go in brackets"
    if problem is not None:
        reader.error(body, "host", problem)
    return host.lower()


def unreachable_detail(name: str, exc: BaseException, host: str | None = None) -> str:
    """Why an upstream could not be reached, naming its host when the name does not resolve.

    ``host`` is the upstream's own host; aiohttp's connector errors carry it too.
    """
    host = host or getattr(exc, "host", None)
    if isinstance(exc, socket.gaierror) or isinstance(exc.__cause__, socket.gaierror) or _is_dns_error(exc):
        where = f"its host {host!r}" if host else "its host"
        return f"upstream {name!r} is unreachable: {where} does not resolve (check the upstream's url and the DNS)"
    return f"upstream {name!r} is unreachable ({type(exc).__name__})"


def _is_dns_error(exc: BaseException) -> bool:
    """aiohttp wraps the resolver's gaierror in ClientConnectorDNSError (its os_error)."""
    return isinstance(getattr(exc, "os_error", None), socket.gaierror)
