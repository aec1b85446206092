"""IP addresses, allowlists and the client IP of a request.

Parsing is strict on purpose: an allowlist entry or a forwarded address that
could be read two ways (``010.1.1.1`` as octal or decimal, ``fe80::1%eth0``
with a zone) is refused, never guessed at.  IPv4-mapped IPv6 addresses
(``::ffff:1.1.1.5``) become plain IPv4 everywhere, so a dual-stack listener
cannot dodge an IPv4 rule.
"""

from __future__ import annotations

import bisect
import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from proxy.errors import LabgateError
from proxy.reasons import Reason

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
ForwardedHeader = Literal["x-forwarded-for", "forwarded"]

# A forwarding chain longer than this is garbage or an attack, not a network.
MAX_FORWARDED_HOPS = 64
_RANGE_SEPARATOR = re.compile(r"\s*[-\u2013]\s*")  # hyphen or en dash, as vendors write them
# Dashes that look like a range separator but are not one (word processors make
# em dashes of hyphens): named in the error, with the range written as meant.
_LOOKALIKE_DASHES = {
    "\u2010": "a Unicode hyphen (U+2010)", "\u2011": "a non-breaking hyphen (U+2011)",
    "\u2012": "a figure dash (U+2012)", "\u2014": "an em dash (U+2014)",
    "\u2015": "a horizontal bar (U+2015)", "\u2212": "a minus sign (U+2212)", "\ufe63": "a small hyphen (U+FE63)",
}
_ADDRESS_CHARS = re.compile(r"[0-9A-Fa-f.:]+")
_MAPPED_V4 = ipaddress.IPv6Network("::ffff:0:0/96")


class InvalidAddress(LabgateError, ValueError):
    """An address, network or range that labgate will not interpret (an IP rule then denies: never a guess)."""

    reason = Reason.CLIENT_IP_UNKNOWN


@functools.lru_cache(maxsize=4096)
def parse_ip(text: str) -> IPAddress:
    """One address, strictly: no zone id, no leading-zero octets, no spaces.

    Cached: the same peers and forwarded addresses come back on every request.
    """
    if not _ADDRESS_CHARS.fullmatch(text):
        raise InvalidAddress(f"{text[:64]!r} is not an IP address")
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        # ipaddress refuses '01.1.1.1' (ambiguous octal) and every other oddity.
        raise InvalidAddress(f"{text[:64]!r} is not an IP address") from None
    return _unmapped(address)


def _unmapped(address: IPAddress) -> IPAddress:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True)
class AddressRange:
    """An inclusive range of one IP version; ``text`` is how the operator wrote it."""

    first: IPAddress
    last: IPAddress
    text: str

    @property
    def version(self) -> int:
        return self.first.version


def parse_entry(text: str) -> AddressRange:
    """``10.0.0.1``, ``10.0.0.0/8``, ``2001:db8::/32``, ``1.1.1.0 – 1.1.1.25`` or ``a - b``."""
    entry = text.strip()
    _refuse_lookalike_dash(entry)
    parts = _RANGE_SEPARATOR.split(entry)
    if len(parts) == 2:
        first, last = parse_ip(parts[0]), parse_ip(parts[1])
        if first.version != last.version:
            raise InvalidAddress(f"range {entry!r} mixes IPv4 and IPv6")
        if int(first) > int(last):
            raise InvalidAddress(f"range {entry!r} ends before it starts")
        return AddressRange(first, last, entry)
    if len(parts) != 1:
        raise InvalidAddress(f"{entry!r} is not an address, a network or a range 'a - b'")
    if "/" in entry:
        return _parse_network(entry)
    address = parse_ip(entry)
    return AddressRange(address, address, entry)


def _not_a_network(entry: str, address_text: str, exc: ValueError) -> str:
    try:
        widened = ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return f"{entry!r} is not a network: {exc}"
    return (
        f"{entry!r} has host bits set: write the network {str(widened)!r} "
        f"(all of {widened.network_address} - {widened.broadcast_address}), or {address_text!r} for the one address"
    )


def _refuse_lookalike_dash(entry: str) -> None:
    """A range written with the wrong dash is refused with the range written as meant."""
    for dash, name in _LOOKALIKE_DASHES.items():
        if dash in entry:
            meant = _RANGE_SEPARATOR.sub(" - ", entry.replace(dash, "-"))
            raise InvalidAddress(
                f"{entry[:64]!r}: {name} does not separate a range; write a hyphen or an en dash, e.g. {meant[:64]!r}"
            )


def _parse_network(entry: str) -> AddressRange:
    address_text, _, prefix_text = entry.partition("/")
    parse_ip(address_text)  # the same strictness as single addresses
    if not prefix_text.isdigit() or (len(prefix_text) > 1 and prefix_text.startswith("0")):
        raise InvalidAddress(f"{entry!r}: the prefix length must be a plain number")
    try:
        network = ipaddress.ip_network(entry, strict=True)
    except ValueError as exc:
        # strict=True: '10.0.0.5/8' has host bits set and is refused rather than
        # silently widened to 10.0.0.0/8; the message says what to write instead.
        raise InvalidAddress(_not_a_network(entry, address_text, exc)) from None
    if isinstance(network, ipaddress.IPv6Network) and network.subnet_of(_MAPPED_V4):
        return AddressRange(_unmapped(network.network_address), _unmapped(network.broadcast_address), entry)
    return AddressRange(network.network_address, network.broadcast_address, entry)


class AddressSet:
    """An allowlist: merged, sorted intervals per IP version, searched by bisection."""

    def __init__(self, ranges: Sequence[AddressRange]) -> None:
        self.entries: tuple[str, ...] = tuple(r.text for r in ranges)
        self._starts: dict[int, list[int]] = {4: [], 6: []}
        self._ends: dict[int, list[int]] = {4: [], 6: []}
        for version in (4, 6):
            spans = sorted((int(r.first), int(r.last)) for r in ranges if r.version == version)
            for start, end in spans:
                ends = self._ends[version]
                if ends and start <= ends[-1] + 1:
                    ends[-1] = max(ends[-1], end)
                else:
                    self._starts[version].append(start)
                    ends.append(end)

    @classmethod
    def from_ranges(cls, ranges: Iterable[AddressRange]) -> AddressSet:
        return cls(list(ranges))

    @classmethod
    def parse(cls, texts: Iterable[str]) -> AddressSet:
        return cls([parse_entry(t) for t in texts])

    def __contains__(self, address: object) -> bool:
        if isinstance(address, ipaddress.IPv4Address):
            version = 4
        elif isinstance(address, ipaddress.IPv6Address):
            address = _unmapped(address)
            version = address.version
        else:
            return False
        value = int(address)
        index = bisect.bisect_right(self._starts[version], value) - 1
        return index >= 0 and value <= self._ends[version][index]

    def __len__(self) -> int:
        return len(self.entries)

    def covers(self, other: AddressRange) -> bool:
        """Whether every address of ``other`` is in the set (merged intervals: it lies inside one)."""
        version, first, last = other.version, int(other.first), int(other.last)
        index = bisect.bisect_right(self._starts[version], first) - 1
        return index >= 0 and last <= self._ends[version][index]

    def __repr__(self) -> str:
        return f"AddressSet({list(self.entries)!r})"

    def covers_everything(self) -> bool:
        """True when every IPv4 or every IPv6 address is in the set."""
        full = {4: (0, 2**32 - 1), 6: (0, 2**128 - 1)}
        return any(
            self._starts[v][:1] == [lo] and self._ends[v][:1] == [hi] for v, (lo, hi) in full.items()
        )


# Peers remembered as not trusted (peer addresses are as many as the clients; bounded).
_MAX_DIRECT_PEERS = 4096


class ClientIpResolver:
    """The client IP: the TCP peer, unless the peer is a trusted proxy.

    Only then is the forwarding header read, right to left, skipping trusted
    hops; the first untrusted hop is the client.  Anything unreadable in the
    chain makes the client unknown (``None``), which IP rules deny.
    """

    def __init__(self, trusted: AddressSet, header: ForwardedHeader = "x-forwarded-for") -> None:
        self.trusted = trusted
        self.header = header
        # Peers that are not trusted proxies: their own address is the client, whatever the headers say.
        self.direct: dict[str, IPAddress] = {}

    def resolve(self, peer: str | None, headers: Mapping[str, str]) -> IPAddress | None:
        direct = self.direct.get(peer or "")
        if direct is not None:
            return direct
        try:
            peer_ip = parse_ip(peer or "")
        except InvalidAddress:
            return None  # a Unix socket or an odd transport: no IP to compare
        if peer_ip not in self.trusted:
            if len(self.direct) >= _MAX_DIRECT_PEERS:
                self.direct.clear()
            self.direct[peer or ""] = peer_ip
            return peer_ip
        hops = self._hops(headers)
        if hops is None:
            return None
        if not hops:
            return peer_ip
        for hop in reversed(hops):
            if hop not in self.trusted:
                return hop
        return hops[0]  # every hop is trusted: the first one is the client

    def _hops(self, headers: Mapping[str, str]) -> list[IPAddress] | None:
        name = "Forwarded" if self.header == "forwarded" else "X-Forwarded-For"
        getall = getattr(headers, "getall", None)
        values: list[str] = list(getall(name, [])) if getall else ([headers[name]] if name in headers else [])
        if self.header == "forwarded":
            texts = forwarded_for_addresses(values)
            if texts is None:
                return None
        else:
            texts = [item.strip() for value in values for item in value.split(",")]
        if len(texts) > MAX_FORWARDED_HOPS:
            return None
        hops: list[IPAddress] = []
        for text in texts:
            try:
                hops.append(parse_ip(text or ""))
            except InvalidAddress:
                return None
        return hops


# RFC 7239 section 4 (with RFC 7230's token and quoted-string): one forwarded-pair.
_TOKEN = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[\t !#-\[\]-~]|\\[\t -~])*"'
_PAIR = re.compile(rf"\s*({_TOKEN})=({_TOKEN}|{_QUOTED})\s*")
_NODE_PORT = re.compile(r"\d{1,5}")
_QUOTED_PAIR = re.compile(r"\\(.)")  # RFC 7230 section 3.2.6: '\x' stands for 'x' ('\\' for one backslash)


def forwarded_for_addresses(values: list[str]) -> list[str] | None:
    """Each hop's ``for=`` address from RFC 7239 ``Forwarded`` headers, in order; None if anything is malformed.

    Strict on purpose, since a lenient reading is a guess about who the client is:
    one element per hop (every element must name ``for=``), no parameter twice in
    an element (section 4: "Each parameter MUST NOT occur more than once per
    forwarded-element"), and values that need quoting quoted (an IPv6 address or
    a port: ``for=1.1.1.5:80`` is not a token).
    """
    addresses: list[str] = []
    for value in values:
        for element in _split_outside_quotes(value, ","):
            seen: dict[str, str] = {}
            for pair in _split_outside_quotes(element, ";"):
                match = _PAIR.fullmatch(pair)
                if match is None:
                    return None
                key = match.group(1).lower()
                if key in seen:
                    return None
                raw = match.group(2)
                seen[key] = _QUOTED_PAIR.sub(r"\1", raw[1:-1]) if raw.startswith('"') else raw
            if "for" not in seen:
                return None
            address = _node_address(seen["for"])
            if address is None:
                return None
            addresses.append(address)
            if len(addresses) > MAX_FORWARDED_HOPS:
                return None
    return addresses


def _split_outside_quotes(text: str, separator: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == separator and not quoted:
            parts.append("".join(current))
            current = []
            continue
        current.append(char)
    parts.append("".join(current))
    return parts


def _node_address(node: str) -> str | None:
    """RFC 7239 section 6 node: ``1.2.3.4``, ``1.2.3.4:80``, ``[2001:db8::1]`` or ``[2001:db8::1]:80``.

    ``unknown`` and obfuscated ``_names`` come back as they are and fail to parse as
    an address: the client is then unknown, never guessed.
    """
    if node.startswith("["):
        inside, bracket, rest = node[1:].partition("]")
        if not bracket or (rest and not (rest.startswith(":") and _NODE_PORT.fullmatch(rest[1:]))):
            return None
        return inside
    host, colon, port = node.partition(":")
    if colon and not _NODE_PORT.fullmatch(port):
        return None
    return host
