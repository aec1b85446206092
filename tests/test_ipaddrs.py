"""Addresses, allowlists and the client IP: strict, never guessed at."""

from __future__ import annotations

import ipaddress

import pytest
from multidict import CIMultiDict

from proxy.ipaddrs import AddressSet, ClientIpResolver, InvalidAddress, parse_entry, parse_ip


@pytest.mark.parametrize(
    "text, expected",
    [
        ("10.0.0.1", "10.0.0.1"),
        ("2001:db8::1", "2001:db8::1"),
        ("::ffff:1.1.1.5", "1.1.1.5"),
        ("::FFFF:0101:0105", "1.1.1.5"),
        ("::1", "::1"),
    ],
)
def test_addresses_parse(text: str, expected: str) -> None:
    assert parse_ip(text) == ipaddress.ip_address(expected)


@pytest.mark.parametrize(
    "text",
    [
        "010.0.0.1",  # octal or decimal? refused
        "10.0.0.01",
        "fe80::1%eth0",  # zone id
        "10.0.0.1 ",
        " 10.0.0.1",
        "10.0.0",
        "10.0.0.256",
        "0x0a.0.0.1",
        "167772161",  # an integer is an address to some parsers
        "example.com",
        "",
        "1.2.3.4:80",
        "[::1]",
        "unknown",
    ],
)
def test_ambiguous_or_garbage_addresses_are_refused(text: str) -> None:
    with pytest.raises(InvalidAddress):
        parse_ip(text)


@pytest.mark.parametrize(
    "entry, inside, outside",
    [
        ("10.0.0.1", ["10.0.0.1", "::ffff:10.0.0.1"], ["10.0.0.2", "10.0.0.0"]),
        ("10.0.0.0/8", ["10.0.0.0", "10.255.255.255"], ["11.0.0.0", "9.255.255.255"]),
        ("1.1.1.0 – 1.1.1.25", ["1.1.1.0", "1.1.1.25", "::ffff:1.1.1.5"], ["1.1.1.26", "1.1.0.255"]),
        ("1.1.1.0-1.1.1.25", ["1.1.1.13"], ["1.1.1.26"]),
        ("2001:db8::1 - 2001:db8::ffff", ["2001:db8::1", "2001:db8::ffff"], ["2001:db8::", "2001:db8::1:0"]),
        ("2001:db8::/32", ["2001:db8:ffff::1"], ["2001:db9::1", "10.0.0.1"]),
        ("::ffff:0:0/96", ["1.2.3.4", "255.255.255.255"], ["::1"]),
    ],
)
def test_allowlist_entries(entry: str, inside: list[str], outside: list[str]) -> None:
    allowed = AddressSet.parse([entry])
    for text in inside:
        assert ipaddress.ip_address(text) in allowed, text
    for text in outside:
        assert ipaddress.ip_address(text) not in allowed, text


@pytest.mark.parametrize(
    "entry",
    [
        "10.0.0.5/8",  # host bits set: not silently widened
        "10.0.0.0/33",
        "10.0.0.0/08",
        "10.0.0.0/",
        "1.1.1.25 - 1.1.1.0",  # backwards
        "1.1.1.0 - 2001:db8::1",  # mixed versions
        "1.1.1.0 - 1.1.1.2 - 1.1.1.3",
        "10.0.0.*",
        "010.0.0.0/8",
    ],
)
def test_bad_allowlist_entries_are_refused(entry: str) -> None:
    with pytest.raises(InvalidAddress):
        parse_entry(entry)


def test_overlapping_entries_merge_and_non_addresses_are_never_inside() -> None:
    allowed = AddressSet.parse(["10.0.0.0 - 10.0.0.10", "10.0.0.5 - 10.0.0.20", "10.0.0.21"])
    assert ipaddress.ip_address("10.0.0.21") in allowed
    assert ipaddress.ip_address("10.0.0.22") not in allowed
    assert "10.0.0.1" not in allowed  # a string is not an address
    assert None not in allowed
    assert len(allowed) == 3


def test_covers_everything() -> None:
    assert AddressSet.parse(["0.0.0.0/0"]).covers_everything()
    assert AddressSet.parse(["::/0"]).covers_everything()
    assert not AddressSet.parse(["0.0.0.0/1"]).covers_everything()
    assert not AddressSet.parse([]).covers_everything()


TRUSTED = AddressSet.parse(["10.0.0.0/8", "2001:db8:1::/48"])


def headers(**values: str) -> CIMultiDict[str]:
    return CIMultiDict((k.replace("_", "-"), v) for k, v in values.items())


@pytest.mark.parametrize(
    "peer, sent, expected",
    [
        # An untrusted peer is the client, whatever it claims.
        ("203.0.113.9", headers(X_Forwarded_For="1.1.1.5"), "203.0.113.9"),
        ("::ffff:203.0.113.9", headers(), "203.0.113.9"),
        # A trusted peer: read right to left, skipping trusted hops.
        ("10.0.0.1", headers(X_Forwarded_For="1.1.1.5"), "1.1.1.5"),
        ("10.0.0.1", headers(X_Forwarded_For="6.6.6.6, 1.1.1.5, 10.0.0.7"), "1.1.1.5"),
        ("10.0.0.1", headers(X_Forwarded_For="::ffff:1.1.1.5"), "1.1.1.5"),
        ("10.0.0.1", headers(), "10.0.0.1"),
        ("10.0.0.1", headers(X_Forwarded_For="10.0.0.3, 10.0.0.2"), "10.0.0.3"),
        # Garbage in the chain: the client is unknown, never guessed.
        ("10.0.0.1", headers(X_Forwarded_For="1.1.1.5, bogus"), None),
        ("10.0.0.1", headers(X_Forwarded_For="01.1.1.5"), None),
        ("10.0.0.1", headers(X_Forwarded_For="fe80::1%eth0"), None),
        ("10.0.0.1", headers(X_Forwarded_For=",".join(["1.1.1.1"] * 65)), None),
        ("not-an-ip", headers(), None),
        (None, headers(), None),
    ],
)
def test_client_ip_from_x_forwarded_for(peer: str | None, sent: CIMultiDict[str], expected: str | None) -> None:
    resolved = ClientIpResolver(TRUSTED).resolve(peer, sent)
    assert resolved == (ipaddress.ip_address(expected) if expected else None)


def test_every_x_forwarded_for_header_line_counts_in_order() -> None:
    sent = CIMultiDict([("X-Forwarded-For", "1.1.1.5"), ("X-Forwarded-For", "6.6.6.6")])
    assert ClientIpResolver(TRUSTED).resolve("10.0.0.1", sent) == ipaddress.ip_address("6.6.6.6")


@pytest.mark.parametrize(
    "value, expected",
    [
        ('for=192.0.2.60;proto=http;by=203.0.113.43', "192.0.2.60"),
        ('for="[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"),
        ("for=1.1.1.5, for=10.0.0.9", "1.1.1.5"),
        ('For="1.1.1.5:8080"', "1.1.1.5"),
        ("for=unknown", None),
        ("for=_hidden", None),
        ("proto=https", None),
        ('for="[2001:db8::1', None),
    ],
)
def test_client_ip_from_forwarded(value: str, expected: str | None) -> None:
    resolved = ClientIpResolver(TRUSTED, "forwarded").resolve("10.0.0.1", headers(Forwarded=value))
    assert resolved == (ipaddress.ip_address(expected) if expected else None)


def test_forwarded_header_is_ignored_when_x_forwarded_for_is_configured() -> None:
    resolver = ClientIpResolver(TRUSTED, "x-forwarded-for")
    assert resolver.resolve("10.0.0.1", headers(Forwarded="for=1.1.1.5")) == ipaddress.ip_address("10.0.0.1")


@pytest.mark.parametrize(
    "entry, covered",
    [("10.1.1.5", True), ("10.1.1.0/24", True), ("10.1.1.250 – 10.1.2.0", True), ("10.1.2.1", False),
     ("10.1.0.0/16", False), ("::ffff:10.1.1.7", True), ("2001:db8::1", False), ("10.1.3.0 - 10.1.3.255", True)],
)
def test_a_set_covers_a_range_only_when_every_address_of_it_is_inside(entry: str, covered: bool) -> None:
    allowlist = AddressSet.parse(["10.1.1.0/24", "10.1.2.0", "10.1.3.0 – 10.1.3.255"])
    assert allowlist.covers(parse_entry(entry)) is covered
