"""Addresses, allowlists and the client IP: strict, never guessed at."""

from __future__ import annotations

import ipaddress

import pytest
from multidict import CIMultiDict

from proxy.ipaddrs import (
    AddressSet,
    ClientIpResolver,
    InvalidAddress,
    forwarded_for_addresses,
    parse_entry,
    parse_ip,
)
from tests.conftest import GatewayStarter, RecordingUpstream, mint, raw_request


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


@pytest.mark.parametrize("dash", ["\u2014", "\u2012", "\u2212", "\u2011"])
def test_a_range_with_a_lookalike_dash_says_which_dash_to_write(dash: str) -> None:
    with pytest.raises(InvalidAddress) as refused:
        parse_entry(f"10.0.0.1 {dash} 10.0.0.20")
    message = str(refused.value)
    assert "does not separate a range; write a hyphen or an en dash" in message
    assert "e.g. '10.0.0.1 - 10.0.0.20'" in message


def test_an_em_dash_range_is_named_as_such() -> None:
    with pytest.raises(InvalidAddress, match=r"an em dash \(U\+2014\)"):
        parse_entry("10.0.0.1\u201410.0.0.20")


@pytest.mark.parametrize(
    ("entry", "network", "single"),
    [("10.0.0.5/24", "10.0.0.0/24", "10.0.0.5"), ("2001:db8::1/32", "2001:db8::/32", "2001:db8::1")],
)
def test_a_network_with_host_bits_suggests_the_network_and_the_address(entry: str, network: str, single: str) -> None:
    with pytest.raises(InvalidAddress) as refused:
        parse_entry(entry)
    assert f"has host bits set: write the network '{network}'" in str(refused.value)
    assert f"or '{single}' for the one address" in str(refused.value)


@pytest.mark.parametrize(
    "entry, covered",
    [("10.1.1.5", True), ("10.1.1.0/24", True), ("10.1.1.250 – 10.1.2.0", True), ("10.1.2.1", False),
     ("10.1.0.0/16", False), ("::ffff:10.1.1.7", True), ("2001:db8::1", False), ("10.1.3.0 - 10.1.3.255", True)],
)
def test_a_set_covers_a_range_only_when_every_address_of_it_is_inside(entry: str, covered: bool) -> None:
    allowlist = AddressSet.parse(["10.1.1.0/24", "10.1.2.0", "10.1.3.0 – 10.1.3.255"])
    assert allowlist.covers(parse_entry(entry)) is covered


@pytest.mark.parametrize(
    "values, expected",
    [
        # Quoted forms (RFC 7239 section 6: a port or an IPv6 address needs quoting).
        (['for="1.1.1.5:80"'], ["1.1.1.5"]),
        (['for="[2001:db8::1]"'], ["2001:db8::1"]),
        (['for="[2001:db8::1]:4711";proto=https'], ["2001:db8::1"]),
        (['for="1.1.1.5"'], ["1.1.1.5"]),
        # Several elements, several header lines: in order.
        (["for=1.1.1.5, for=10.0.0.9"], ["1.1.1.5", "10.0.0.9"]),
        (["for=1.1.1.5;proto=http", "for=10.0.0.9;by=10.0.0.1"], ["1.1.1.5", "10.0.0.9"]),
        # A comma or semicolon inside a quoted value separates nothing.
        (['for=1.1.1.5;by="a,b;c", for=6.6.6.6'], ["1.1.1.5", "6.6.6.6"]),
        (['host="x;for=9.9.9.9";for=1.1.1.5'], ["1.1.1.5"]),
        # A quoted-pair stands for its character.
        (['for=1.1.1.5;by="a\\"b"'], ["1.1.1.5"]),
        (['for="1.1.1.\\5"'], ["1.1.1.5"]),
        (['for="1.1.1.5\\\\"'], ["1.1.1.5\\"]),  # an escaped backslash stays one (and is no address)
        # Parameter names are case-insensitive; spaces around elements and pairs are fine.
        (["  For=1.1.1.5 ; PROTO=https ,  for=6.6.6.6 "], ["1.1.1.5", "6.6.6.6"]),
        ([], []),
    ],
)
def test_forwarded_for_addresses_are_read_per_rfc_7239(values: list[str], expected: list[str]) -> None:
    assert forwarded_for_addresses(values) == expected


@pytest.mark.parametrize(
    "values",
    [
        ["for=1.1.1.5:80"],  # a port must be quoted: not a token
        ["for=2001:db8::1"],  # unquoted IPv6
        ["for=[2001:db8::1]"],  # brackets are not token characters either
        ["for=1.1.1.5;for=6.6.6.6"],  # two for= in one element
        ["for=1.1.1.5;proto=http;PROTO=https"],  # any parameter twice
        ["proto=https"],  # an element without for=
        ["for=1.1.1.5, proto=https"],  # a hop without for=
        ["for=1.1.1.5", "by=10.0.0.1"],  # ... on another header line
        ['for="1.1.1.5'],  # unterminated quote
        ['for=1.1.1.5"'],
        ['for="1.1.1."5"'],
        ['for="[2001:db8::1"'],  # unclosed bracket
        ['for="[2001:db8::1]x"'],
        ['for="1.1.1.5:http"'],  # a port that is not a number
        ['for="1.1.1.5:"'],
        ["for="],
        ["for = 1.1.1.5"],  # no spaces around '='
        ["for=1.1.1.5,"],  # an empty element
        [""],
        ["for=1.1.1.5;"],
    ],
)
def test_malformed_forwarded_makes_the_whole_chain_unreadable(values: list[str]) -> None:
    assert forwarded_for_addresses(values) is None
    sent = CIMultiDict(("Forwarded", v) for v in values)
    assert ClientIpResolver(TRUSTED, "forwarded").resolve("10.0.0.1", sent) is None  # client unknown, never guessed


def test_an_escaped_backslash_is_never_dropped_to_make_an_address() -> None:
    sent = CIMultiDict([("Forwarded", 'for="1.1.1.5\\\\"')])  # the node is '1.1.1.5\\', no address
    assert ClientIpResolver(TRUSTED, "forwarded").resolve("10.0.0.1", sent) is None


def test_every_forwarded_header_line_counts_in_order() -> None:
    sent = CIMultiDict([("Forwarded", "for=6.6.6.6"), ("Forwarded", 'for="1.1.1.5:443", for=10.0.0.9')])
    assert ClientIpResolver(TRUSTED, "forwarded").resolve("10.0.0.1", sent) == ipaddress.ip_address("1.1.1.5")


def test_a_forwarded_chain_longer_than_64_hops_is_unknown() -> None:
    assert forwarded_for_addresses([", ".join(["for=1.1.1.1"] * 64)]) == ["1.1.1.1"] * 64
    assert forwarded_for_addresses([", ".join(["for=1.1.1.1"] * 65)]) is None


@pytest.mark.parametrize(
    "forwarded, status, reason",
    [
        ("for=10.9.1.1", 200, None),  # the office network, well formed: served
        ("for=10.9.1.1:80", 403, "client_ip_unknown"),  # an unquoted port
        ("for=10.9.1.1;for=10.9.1.2", 403, "client_ip_unknown"),  # two for= in one element
        ("for=6.6.6.6, proto=https", 403, "client_ip_unknown"),  # a hop without for=
    ],
)
async def test_a_trusted_proxy_sending_a_malformed_forwarded_header_leaves_the_client_unknown(
    start_gateway: GatewayStarter, upstream: RecordingUpstream, forwarded: str, status: int, reason: str | None
) -> None:
    gateway = await start_gateway(upstream.url, trusted_proxies=["127.0.0.1"], client_ip_header="forwarded")
    head = (
        "GET /demo/api/hosts HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: Bearer {mint({'role': 'office'})}\r\nForwarded: {forwarded}\r\n\r\n"
    )
    response = await raw_request(gateway.port, head)
    assert response.status == status
    if reason is None:
        assert [r.raw_path for r in upstream.received] == ["/api/hosts"]
        assert "forwarded" not in upstream.received[0].headers
    else:
        assert response.json()["reason"] == reason
        assert upstream.received == []


def test_a_remembered_peer_is_only_ever_an_untrusted_one_so_a_trusted_proxy_s_header_is_read_every_time() -> None:
    resolver = ClientIpResolver(AddressSet.parse(["10.0.0.0/8"]))
    assert resolver.resolve("192.0.2.7", {"X-Forwarded-For": "1.2.3.4"}) == parse_ip("192.0.2.7")
    assert resolver.resolve("192.0.2.7", {}) is resolver.resolve("192.0.2.7", {"X-Forwarded-For": "5.6.7.8"})
    for forwarded in ("1.2.3.4", "5.6.7.8", "5.6.7.8, 10.0.0.9"):
        expected = forwarded.split(",")[0]
        assert resolver.resolve("10.0.0.1", {"X-Forwarded-For": forwarded}) == parse_ip(expected)
    assert resolver.resolve("10.0.0.1", {}) == parse_ip("10.0.0.1")
    assert resolver.resolve("not an address", {}) is None
