"""A token's own restrictions, read from its claims: they narrow its type, never widen it.

A Commvault custom token carries its endpoint list, a service account its IP
allowlist.  Whichever source vouches for the claims (a verified JWT, an
introspection answer), a malformed list refuses the token rather than being
read loosely.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from proxy.errors import LabgateError
from proxy.ipaddrs import AddressSet, InvalidAddress, parse_entry
from proxy.reasons import Reason


class MalformedNarrowing(LabgateError, ValueError):
    """The claim exists but cannot be read safely; the message names the claim, never its value."""

    reason = Reason.MALFORMED_TOKEN


# A path and nothing else: '%' could hide '/' or '..' from a prefix comparison on
# raw paths, '?' and '#' end a path, and backslashes, spaces and control
# characters have no place in one.
_PREFIX_SHAPE = re.compile(r"/[^%?#\\\x00-\x20\x7f]*")


def path_prefixes_claim(claims: Mapping[str, Any], name: str | None) -> tuple[str, ...] | None:
    """A token's own endpoint list (a Commvault custom scope); None when the token has none."""
    if name is None or name not in claims:
        return None
    value = claims[name]
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise MalformedNarrowing(f"the token's {name!r} claim must be a list of paths")
    prefixes: list[str] = []
    for prefix in value:
        segments = prefix.split("/")[1:]
        if (
            not _PREFIX_SHAPE.fullmatch(prefix)
            or "" in segments[:-1]  # '//' anywhere but a lone trailing '/'
            or any(s in (".", "..") for s in segments)
        ):
            raise MalformedNarrowing(f"the token's {name!r} claim holds a path labgate cannot match safely")
        prefixes.append(prefix.rstrip("/") or "/")
    return tuple(prefixes)


def client_ips_claim(claims: Mapping[str, Any], name: str | None) -> AddressSet | None:
    """A token's own IP allowlist (a service account's); None when the token has none."""
    if name is None or name not in claims:
        return None
    value = claims[name]
    entries = [value] if isinstance(value, str) else value
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise MalformedNarrowing(f"the token's {name!r} claim must be a list of addresses")
    try:
        return AddressSet.from_ranges(parse_entry(e) for e in entries)
    except InvalidAddress:
        raise MalformedNarrowing(f"the token's {name!r} claim holds an invalid address") from None
