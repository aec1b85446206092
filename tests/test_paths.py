"""The path contract: one reading of a target, or 400 before any policy runs."""

from __future__ import annotations

import pytest

from proxy.paths import TargetError, normalize_query_name, parse_target
from proxy.policy.compile import compile_pack
from proxy.policy.decide import RequestFacts, decide
from proxy.policy.load import load_pack_text
from proxy.reasons import Reason
from proxy.token_facts import TokenFacts
from tests.conftest import GatewayStarter, RecordingUpstream, mint, raw_request


@pytest.mark.parametrize(
    "raw, segments",
    [
        ("/", ()),
        ("/api/hosts", ("api", "hosts")),
        ("/api/hosts/", ("api", "hosts", "")),
        ("/api/host%73", ("api", "hosts")),  # an unreserved escape decodes for matching
        ("/api/vm%20one", ("api", "vm one")),
        ("/api/a:b@c!$&'()*+,=", ("api", "a:b@c!$&'()*+,=")),
        ("/api/..x/x..", ("api", "..x", "x..")),
    ],
)
def test_unambiguous_paths_are_accepted(raw: str, segments: tuple[str, ...]) -> None:
    target = parse_target(raw)
    assert target.segments == segments
    assert target.forward_target == raw


@pytest.mark.parametrize(
    "raw",
    [
        "/api/a%2Fb",
        "/api/a%2fb",
        "/api/a%5Cb",
        "/api/a%5cb",
        "/api/a%252Fb",  # double-encoded
        "/api/a%25",
        "/api/a\\b",
        "/api/./hosts",
        "/api/../hosts",
        "/api/..",
        "/api/%2E%2E/hosts",
        "/api/%2e/hosts",
        "/api/.%2e/hosts",
        "/api/a%00",
        "/api/a\x00",
        "/api/a%0A",
        "/api/a%",
        "/api/a%G1",
        "/api/a%2",
        "/api/%C3%A9",  # non-ASCII, even valid UTF-8
        "/api/%FF",  # non-UTF-8
        "/api/é",
        "/api/a\udcff",  # undecodable byte as aiohttp hands it over
        "/api//hosts",
        "//api/hosts",
        "/api/hosts//",
        "/api;jsessionid=1/hosts",
        "/api/hosts;x",
        "/api/a%3Bb",
        "/api/a%3Fb",
        "/api/a%23b",
        "/api/a b",
        "/api/a\tb",
    ],
)
def test_ambiguous_paths_are_refused(raw: str) -> None:
    with pytest.raises(TargetError) as caught:
        parse_target(raw)
    assert caught.value.reason is Reason.AMBIGUOUS_PATH


@pytest.mark.parametrize(
    ("raw", "forwarded", "segments"),
    [
        ("/api//hosts", "/api/hosts", ("api", "hosts")),
        ("//api/hosts?a=1", "/api/hosts?a=1", ("api", "hosts")),
        ("/api/hosts//", "/api/hosts/", ("api", "hosts", "")),
        ("/cv///V4/AccessToken/Renew", "/cv/V4/AccessToken/Renew", ("cv", "V4", "AccessToken", "Renew")),
    ],
)
def test_repeated_slashes_are_read_and_forwarded_merged_for_an_appliance_that_merges(
    raw: str, forwarded: str, segments: tuple[str, ...]
) -> None:
    target = parse_target(raw, merge_slashes=True)
    assert (target.forward_target, target.segments, target.merged_slashes) == (forwarded, segments, True)
    assert parse_target("/api/hosts", merge_slashes=True).merged_slashes is False


def test_merging_slashes_never_lets_a_dot_segment_or_an_encoded_slash_through() -> None:
    for raw in ("/api//../hosts", "/api//%2F/hosts", "/api//./hosts"):
        with pytest.raises(TargetError) as caught:
            parse_target(raw, merge_slashes=True)
        assert caught.value.reason is Reason.AMBIGUOUS_PATH


@pytest.mark.parametrize("raw", ["api/hosts", "*", "http://evil.example/api/hosts", "", "/api/hosts#frag"])
def test_only_origin_form_targets_are_accepted(raw: str) -> None:
    with pytest.raises(TargetError) as caught:
        parse_target(raw)
    assert caught.value.reason is Reason.BAD_REQUEST


@pytest.mark.parametrize(
    "raw, names",
    [
        ("/a?offset=1&limit=2", ("offset", "limit")),
        ("/a?SORT=name", ("sort",)),
        ("/a?s%6Frt=name", ("sort",)),
        ("/a?S%6FRT=name", ("sort",)),
        ("/a?sort[]=name", ("sort",)),
        ("/a?sort%5B%5D=name", ("sort",)),
        ("/a?sort=1&sort=2", ("sort", "sort")),
        ("/a?flag", ("flag",)),
        ("/a?x=1&&y=2&", ("x", "y")),
        ("/a?", ()),
        ("/a?name=caf%C3%A9&q=a%2Fb", ("name", "q")),
        ("/a?filter=a+b", ("filter",)),
    ],
)
def test_query_names_are_decoded_and_folded(raw: str, names: tuple[str, ...]) -> None:
    target = parse_target(raw)
    assert target.query_names == names
    assert target.forward_target == raw


@pytest.mark.parametrize(
    "raw",
    [
        "/a?=1",
        "/a?%73ort%00=1",
        "/a?s%=1",
        "/a?so%zzrt=1",
        "/a?a=b;sort=1",
        "/a?a b=1",
        "/a?name=%FF",
        "/a?name=%0D%0A",
        "/a?sor t=1",
        "/a?s%2520rt=1",
        "/a?a=é",
        "/a?a=1#x",
    ],
)
def test_bad_queries_are_refused(raw: str) -> None:
    with pytest.raises(TargetError) as caught:
        parse_target(raw)
    assert caught.value.reason in (Reason.BAD_QUERY, Reason.BAD_REQUEST)


def test_too_many_query_parameters_are_refused() -> None:
    parse_target("/a?" + "&".join(f"p{i}=1" for i in range(10)), max_query_params=10)
    with pytest.raises(TargetError) as caught:
        parse_target("/a?" + "&".join(f"p{i}=1" for i in range(11)), max_query_params=10)
    assert caught.value.reason is Reason.BAD_QUERY


def test_normalized_names() -> None:
    assert normalize_query_name("Sort[0]") == "sort"
    assert normalize_query_name("show_optional_fields") == "show_optional_fields"


@pytest.mark.parametrize(
    "raw, prefix, forwarded, segments",
    [
        ("/svt/api/hosts?limit=1", "/svt", "/api/hosts?limit=1", ("api", "hosts")),
        ("/svt", "/svt", "/", ()),
        ("/svt/", "/svt", "/", ()),
        ("/sv%74/api", "/svt", "/api", ("api",)),
        ("/a/b/c", "/a/b", "/c", ("c",)),
        ("/svt/api/host%73/", "/svt", "/api/host%73/", ("api", "hosts", "")),
    ],
)
def test_strip_prefix_keeps_the_raw_rest(raw: str, prefix: str, forwarded: str, segments: tuple[str, ...]) -> None:
    stripped = parse_target(raw).strip_prefix(prefix)
    assert stripped is not None
    assert stripped.forward_target == forwarded
    assert stripped.segments == segments


@pytest.mark.parametrize("raw", ["/svtx/api", "/SVT/api", "/", "/api/svt"])
def test_strip_prefix_needs_whole_segments(raw: str) -> None:
    assert parse_target(raw).strip_prefix("/svt") is None


def test_errors_never_echo_the_target() -> None:
    with pytest.raises(TargetError) as caught:
        parse_target("/api/secret-token-abc%2F")
    assert "secret-token-abc" not in caught.value.detail


# -- control characters in query values, whatever their encoding ----------------------------


@pytest.mark.parametrize("code", range(0x80, 0xA0))
def test_c1_control_characters_in_query_values_are_refused(code: int) -> None:
    """U+0080-U+009F (NEL is U+0085) are controls as much as C0: some log and header parsers break lines at them."""
    encoded = "".join(f"%{b:02X}" for b in chr(code).encode())
    with pytest.raises(TargetError) as caught:
        parse_target(f"/api/hosts?limit={encoded}")
    assert caught.value.reason is Reason.BAD_QUERY


@pytest.mark.parametrize("value", ["%C2%85", "1%C2%85", "%7F", "%1F", "a%C2%9Fb"])
def test_control_characters_anywhere_in_a_value_are_refused(value: str) -> None:
    with pytest.raises(TargetError) as caught:
        parse_target(f"/api/hosts?offset=1&limit={value}")
    assert caught.value.reason is Reason.BAD_QUERY


@pytest.mark.parametrize("value", ["%C2%A0", "%C2%BF", "caf%C3%A9", "%E2%80%8B", "~"])
def test_printable_non_ascii_query_values_around_the_c1_range_are_accepted(value: str) -> None:
    assert parse_target(f"/api/hosts?limit={value}").query_names == ("limit",)


# -- escapes beside dots: one reading, never a dot segment -------------------------------------


@pytest.mark.parametrize(
    "raw, segments",
    [
        ("/Client/v1.2%2D3", ("Client", "v1.2-3")),
        ("/api/a.%41", ("api", "a.A")),
        ("/api/%7Euser.name", ("api", "~user.name")),
        ("/api/..%2D", ("api", "..-")),
    ],
)
def test_a_raw_dot_beside_an_unreserved_escape_is_accepted_and_decoded(raw: str, segments: tuple[str, ...]) -> None:
    target = parse_target(raw)
    assert target.segments == segments
    assert target.forward_target == raw  # forwarded as sent


@pytest.mark.parametrize(
    "raw",
    ["/api/.%2E/hosts", "/api/%2E./hosts", "/api/%2e%2e/hosts", "/api/%2E", "/api/.%2e", "/api/v1%2E2", "/api/a%2E%2D"],
)
def test_an_encoded_dot_is_refused_wherever_it_appears(raw: str) -> None:
    with pytest.raises(TargetError) as caught:
        parse_target(raw)
    assert caught.value.reason is Reason.AMBIGUOUS_PATH


# -- what a {param} may bind ---------------------------------------------------------------------


HOSTS_PACK = compile_pack(
    load_pack_text(
        """
pack: p
token_types:
  reader:
    routes:
      - GET /api/hosts/{id}
      - DELETE /api/hosts/{id}
    deny:
      - DELETE /api/hosts/{id}
""",
        "p.yaml",
    )
)


@pytest.mark.parametrize(
    "method, raw, expected",
    [
        ("GET", "/api/hosts/ab", Reason.ALLOWED),
        ("GET", "/api/hosts/a-b.c_d~e:f@g", Reason.ALLOWED),
        ("GET", "/api/hosts/a&b", Reason.ROUTE_NOT_ALLOWED),  # '&' never binds a {param}
        ("GET", "/api/hosts/a%26b", Reason.ROUTE_NOT_ALLOWED),  # nor does it escaped
        ("GET", "/api/hosts/&", Reason.ROUTE_NOT_ALLOWED),
        ("GET", "/api/hosts/a%20b", Reason.ROUTE_NOT_ALLOWED),
        ("DELETE", "/api/hosts/a&b", Reason.OPERATION_FORBIDDEN),  # a deny rule's {param} binds anything
    ],
)
def test_what_a_param_binds(method: str, raw: str, expected: Reason) -> None:
    facts = TokenFacts(token_type="reader", token_hash="0123456789ab")
    assert decide(RequestFacts(method, parse_target(raw), None), facts, HOSTS_PACK).reason is expected


@pytest.mark.parametrize(
    "target, status, reason",
    [
        ("/demo/api/hosts/v1.2%2D3", 200, None),
        ("/demo/api/hosts/a&b", 403, "route_not_allowed"),
        ("/demo/api/hosts?limit=%C2%85", 400, "bad_query"),
        ("/demo/api/hosts/%2e%2e", 400, "ambiguous_path"),
    ],
)
async def test_the_path_contract_end_to_end(
    start_gateway: GatewayStarter, upstream: RecordingUpstream, target: str, status: int, reason: str | None
) -> None:
    gateway = await start_gateway(upstream.url)
    response = await raw_request(gateway.port, f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {mint()}\r\n\r\n")
    assert response.status == status
    if reason is None:
        assert [r.raw_path for r in upstream.received] == [target.removeprefix("/demo")]  # as sent
    else:
        assert response.json()["reason"] == reason
        assert upstream.received == []
