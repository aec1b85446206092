"""What a Commvault service-account access token may call: its scope, and the account's IP allowlist.

From Commvault's documentation ('Creating an access token for a service
account'):

* All: every endpoint.  Custom: "if you enter /plans, you can execute all plan
  operation REST APIs starting with /plan" — an entry opens the APIs whose
  name starts with it less a plural ``s``, behind at most one version segment
  (``/V2/Plan``); its leading segments match whole (the same reading as
  labgate's ``token_prefix_match: starting-with``, held to one table by a test).
* 1-Touch recovery: /Client, /MediaAgent, /ClientGroup, /V4/ServerGroup,
  /FirewallSummary.  Hyperscale: the Hyperscale REST APIs (under
  ``/V4/Storage/HyperScale``, a choice) and renewing.  Microsoft SCIM: the
  SCIM APIs (under ``/scim``, a choice).
* "To control from which IP addresses the service account must be used":
  the allowlist belongs to the account, so every token of it is held to it.

Paths reach here lower-cased and relative to the API base.
"""

from __future__ import annotations

import ipaddress
import re

from proxy.mocks.commvault_tokens import (
    ALL,
    ALL_TOO,
    CUSTOM,
    HYPERSCALE,
    MS_SCIM,
    ONE_TOUCH,
)

ONE_TOUCH_ENDPOINTS = ("/client", "/mediaagent", "/clientgroup", "/v4/servergroup", "/firewallsummary")
HYPERSCALE_PREFIX = "/v4/storage/hyperscale"
RENEW_PATH = "/v4/accesstoken/renew"
SCIM_PREFIX = "/scim"
_VERSION = re.compile(r"v[0-9]{1,3}")

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IpEntry = IpNetwork | tuple[IpAddress, IpAddress]


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def custom_entry_opens(entry: str, path: str) -> bool:
    """One Custom-scope entry against a lower-cased path, Commvault's "starting with" reading."""
    wanted = [s for s in entry.casefold().strip("/").split("/") if s]
    if not wanted:
        return True
    segments = path.strip("/").split("/") if path.strip("/") else []
    candidates = [segments]
    if segments and _VERSION.fullmatch(segments[0]) and not _VERSION.fullmatch(wanted[0]):
        candidates.append(segments[1:])
    stem = wanted[-1][:-1] if len(wanted[-1]) > 1 and wanted[-1].endswith("s") else wanted[-1]
    for candidate in candidates:
        if len(candidate) >= len(wanted) and candidate[: len(wanted) - 1] == wanted[:-1]:
            if candidate[len(wanted) - 1].startswith(stem):
                return True
    return False


def scope_allows(token_type: int, api_endpoints: list[str], path: str) -> bool:
    """Whether a token of this scope may call ``path`` at all (administering tokens is checked apart)."""
    if token_type in (ALL, ALL_TOO):
        return True
    if token_type == CUSTOM:
        return any(custom_entry_opens(e, path) for e in api_endpoints)
    if token_type == ONE_TOUCH:
        return any(_under(path, e) for e in ONE_TOUCH_ENDPOINTS)
    if token_type == HYPERSCALE:
        return _under(path, HYPERSCALE_PREFIX) or path == RENEW_PATH
    if token_type == MS_SCIM:
        return _under(path, SCIM_PREFIX)
    return False


def ip_entry(text: str) -> IpEntry:
    """One allowlist entry: an address, a CIDR, or a range with a hyphen or an en dash."""
    for dash in ("–", "-"):
        if dash in text:
            low, high = (ipaddress.ip_address(part.strip()) for part in text.split(dash, 1))
            if low.version != high.version or low > high:  # type: ignore[operator]
                raise ValueError(f"not a range: {text!r}")
            return (low, high)
    return ipaddress.ip_network(text.strip(), strict=False)


def ip_allowed(address: str | None, allowlist: list[IpEntry]) -> bool:
    """Whether ``address`` (IPv4-mapped IPv6 read as IPv4) is on the list; an unreadable one never is."""
    if address is None:
        return False
    try:
        ip: IpAddress = ipaddress.ip_address(address)
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for entry in allowlist:
        if isinstance(entry, tuple):
            low, high = entry
            if ip.version == low.version and low <= ip <= high:  # type: ignore[operator]
                return True
        elif ip.version == entry.version and ip in entry:
            return True
    return False
