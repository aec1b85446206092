"""The client's token: where each upstream style reads it, exactly one per request, and how it is re-emitted."""

from __future__ import annotations

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from proxy.gateway import client_token as client_token_module
from proxy.gateway.client_token import (
    MAX_TOKEN_LENGTH,
    ClientToken,
    TokenProblem,
    client_token,
    reemitted,
)
from proxy.reasons import Reason
from proxy.token_facts import token_fingerprint

TOKEN = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"
OTHER = "3a1f0c9e8d7b6a5f4e3d2c1b0a998877"


def sent(*pairs: tuple[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(pairs))


@pytest.mark.parametrize(
    "style, headers, token, scheme",
    [
        ("bearer", [("Authorization", f"Bearer {TOKEN}")], TOKEN, "Bearer"),
        ("bearer", [("authorization", f"bearer {TOKEN}")], TOKEN, "Bearer"),  # names and schemes are case-insensitive
        ("bearer", [("Authorization", f"  BEARER   {TOKEN}  ")], TOKEN, "Bearer"),
        ("bearer", [("Authorization", "Bearer abc=="), ], "abc==", "Bearer"),  # b64token may end in '='
        ("authtoken", [("Authtoken", OTHER)], OTHER, ""),  # bare, as Commvault's REST API documents it
        ("authtoken", [("Authtoken", f"QSDK {OTHER}")], OTHER, "QSDK"),  # as Commvault's Python SDK sends it
        ("authtoken", [("Authtoken", f"qsdk {OTHER}")], OTHER, "QSDK"),
        ("authtoken", [("Authtoken", f"Bearer {OTHER}")], OTHER, "Bearer"),
        ("authtoken", [("Authorization", f"Bearer {TOKEN}")], TOKEN, "Bearer"),
        ("opstoken", [("Authorization", f"OpsToken {OTHER}")], OTHER, "OpsToken"),
        ("opstoken", [("Authorization", f"opstoken {OTHER}")], OTHER, "OpsToken"),
        ("opstoken", [("Authorization", f"vRealizeOpsToken {OTHER}")], OTHER, "vRealizeOpsToken"),
        ("opstoken", [("Authorization", f"Bearer {TOKEN}")], TOKEN, "Bearer"),
    ],
)
def test_where_each_style_reads_the_token(style: str, headers: list[tuple[str, str]], token: str, scheme: str) -> None:
    assert client_token(sent(*headers), style) == ClientToken(token, scheme)


def test_the_same_token_in_both_authtoken_places_is_one_credential_read_from_the_native_header() -> None:
    both = sent(("Authorization", f"Bearer {OTHER}"), ("Authtoken", f"QSDK {OTHER}"))
    assert client_token(both, "authtoken") == ClientToken(OTHER, "QSDK")


@pytest.mark.parametrize(
    "style, headers",
    [
        ("bearer", []),
        ("bearer", [("Authtoken", OTHER)]),  # not where a bearer upstream's clients present it
        ("bearer", [("X-Auth-Token", OTHER)]),
        ("authtoken", []),
        ("opstoken", [("Authtoken", OTHER)]),
    ],
)
def test_no_token_where_the_style_reads_is_missing_token(style: str, headers: list[tuple[str, str]]) -> None:
    problem = client_token(sent(*headers), style)
    assert isinstance(problem, TokenProblem) and problem.reason is Reason.MISSING_TOKEN


@pytest.mark.parametrize(
    "style, headers",
    [
        ("bearer", [("Authorization", f"Basic {OTHER}")]),
        ("bearer", [("Authorization", f"OpsToken {OTHER}")]),
        ("bearer", [("Authorization", f"QSDK {OTHER}")]),
        ("bearer", [("Authorization", OTHER)]),  # bare Authorization: no scheme this style reads
        ("bearer", [("Authorization", "")]),
        ("bearer", [("Authorization", f"Bearer\t{TOKEN}")]),  # RFC 9110 section 11.4: one SP after the scheme
        ("opstoken", [("Authorization", f"Basic {OTHER}")]),
        ("authtoken", [("Authtoken", f"Basic {OTHER}")]),
        ("authtoken", [("Authorization", f"QSDK {OTHER}")]),
    ],
)
def test_another_authentication_method_alone_is_no_token(style: str, headers: list[tuple[str, str]]) -> None:
    """RFC 6750 section 3.1: a request that "attempted using an unsupported authentication method"
    lacks authentication information: missing_token, whose challenge carries no error code."""
    problem = client_token(sent(*headers), style)
    assert isinstance(problem, TokenProblem) and problem.reason is Reason.MISSING_TOKEN, problem
    assert "scheme must be" in problem.detail
    for _, value in headers:
        for word in value.split():
            assert len(word) < 8 or word not in problem.detail  # never the credential in an error


@pytest.mark.parametrize(
    "style, headers",
    [
        # Two headers of one name: an appliance might read the other one.
        ("bearer", [("Authorization", f"Bearer {TOKEN}"), ("Authorization", f"Bearer {TOKEN}")]),
        ("bearer", [("Authorization", f"Bearer {TOKEN}"), ("authorization", f"Bearer {OTHER}")]),
        ("authtoken", [("Authtoken", OTHER), ("Authtoken", OTHER)]),
        ("opstoken", [("Authorization", f"OpsToken {OTHER}"), ("Authorization", f"Bearer {OTHER}")]),
        # Two different credentials.
        ("authtoken", [("Authorization", f"Bearer {TOKEN}"), ("Authtoken", OTHER)]),
        ("authtoken", [("Authorization", f"Bearer {TOKEN}"), ("Authtoken", f"QSDK {OTHER}")]),
        # Another authentication method beside a token: two credentials.
        ("authtoken", [("Authorization", f"Basic {OTHER}"), ("Authtoken", f"Bearer {TOKEN}")]),
        ("authtoken", [("Authorization", f"Bearer {TOKEN}"), ("Authtoken", f"Basic {OTHER}")]),
        # Malformed values.
        ("bearer", [("Authorization", "Bearer")]),
        ("bearer", [("Authorization", "Bearer ")]),
        ("bearer", [("Authorization", f"Bearer {TOKEN} extra")]),
        ("bearer", [("Authorization", "Bearer a,b")]),
        ("bearer", [("Authorization", 'Bearer "abc"')]),
        ("bearer", [("Authorization", "Bearer =abc")]),
        ("bearer", [("Authorization", "Bearer ab=c")]),
        ("bearer", [("Authorization", "Bearer " + "a" * (MAX_TOKEN_LENGTH + 1))]),
        ("authtoken", [("Authtoken", "")]),
        ("authtoken", [("Authtoken", "QSDK")]),  # a scheme with no token is no bare token
        ("authtoken", [("Authtoken", "Bearer")]),
        ("authtoken", [("Authtoken", "QSDK ")]),
        ("authtoken", [("Authtoken", f"QSDK {OTHER} {OTHER}")]),
        ("authtoken", [("Authtoken", f"{OTHER};x")]),
        ("opstoken", [("Authorization", "OpsToken")]),
        ("opstoken", [("Authorization", "vRealizeOpsToken a b")]),
    ],
)
def test_ambiguous_or_malformed_credentials_are_malformed_authorization(style: str, headers: list[tuple[str, str]]) -> None:
    problem = client_token(sent(*headers), style)
    assert isinstance(problem, TokenProblem), problem
    assert problem.reason is Reason.MALFORMED_AUTHORIZATION
    for _, value in headers:
        for word in value.split():
            assert len(word) < 8 or word not in problem.detail  # never the token in an error


def test_the_longest_token_accepted() -> None:
    longest = "a" * MAX_TOKEN_LENGTH
    assert client_token(sent(("Authorization", f"Bearer {longest}"))) == ClientToken(longest, "Bearer")


@pytest.mark.parametrize(
    "style, presented, header",
    [
        ("authtoken", ClientToken(OTHER, ""), ("Authtoken", OTHER)),
        ("authtoken", ClientToken(OTHER, "QSDK"), ("Authtoken", f"QSDK {OTHER}")),
        ("authtoken", ClientToken(OTHER, "Bearer"), ("Authtoken", f"Bearer {OTHER}")),
        ("opstoken", ClientToken(OTHER, "OpsToken"), ("Authorization", f"OpsToken {OTHER}")),
        ("opstoken", ClientToken(OTHER, "vRealizeOpsToken"), ("Authorization", f"vRealizeOpsToken {OTHER}")),
        ("opstoken", ClientToken(TOKEN, "Bearer"), ("Authorization", f"Bearer {TOKEN}")),
        ("bearer", ClientToken(TOKEN, "Bearer"), ("Authorization", f"Bearer {TOKEN}")),
    ],
)
def test_reemitted_in_the_one_header_the_appliance_reads(style: str, presented: ClientToken, header: tuple[str, str]) -> None:
    assert reemitted(presented, style) == header


@pytest.mark.parametrize(
    "style, value, header",
    [
        ("authtoken", f"qsdk {OTHER}", ("Authtoken", f"QSDK {OTHER}")),  # canonical spelling, not the client's bytes
        ("authtoken", f"  {OTHER}  ", ("Authtoken", OTHER)),
        ("opstoken", f"OPSTOKEN  {OTHER}", ("Authorization", f"OpsToken {OTHER}")),
    ],
)
def test_what_is_reemitted_is_rebuilt_never_copied(style: str, value: str, header: tuple[str, str]) -> None:
    name = "Authtoken" if style == "authtoken" else "Authorization"
    presented = client_token(sent((name, value)), style)
    assert isinstance(presented, ClientToken)
    assert reemitted(presented, style) == header


def test_a_token_carries_its_fingerprint_which_is_no_part_of_its_identity() -> None:
    presented = client_token(sent(("Authorization", f"Bearer {TOKEN}")))
    assert isinstance(presented, ClientToken)
    assert presented.fingerprint == token_fingerprint(TOKEN) == ClientToken(TOKEN, "QSDK").fingerprint
    assert presented == ClientToken(TOKEN, "Bearer") != ClientToken(TOKEN, "QSDK")


def test_a_repeated_bearer_header_is_answered_as_it_was_first_read() -> None:
    first = client_token(sent(("Authorization", f"  bearer   {TOKEN} ")))
    again = client_token(sent(("authorization", f"  bearer   {TOKEN} ")))
    assert again is first and first == ClientToken(TOKEN, "Bearer")
    # Remembered per header value: another spelling is read by the rules, and so is another style.
    assert client_token(sent(("Authorization", f"Bearer {TOKEN}"))) == first
    assert client_token(sent(("Authorization", f"  bearer   {TOKEN} ")), "opstoken") == ClientToken(TOKEN, "Bearer")
    # Two headers are refused even when each alone was read before.
    two = client_token(sent(("Authorization", f"Bearer {TOKEN}"), ("Authorization", f"Bearer {TOKEN}")))
    assert isinstance(two, TokenProblem) and two.reason is Reason.MALFORMED_AUTHORIZATION


def test_refusals_are_read_again_every_time_and_remembered_headers_are_bounded() -> None:
    remembered = client_token_module._recent_bearer
    too_long = f"Bearer {'a' * (MAX_TOKEN_LENGTH + 1)}"
    for value in (too_long, "Bearer", f"Basic {OTHER}"):
        for _ in range(2):
            assert isinstance(client_token(sent(("Authorization", value))), TokenProblem)
        assert value not in remembered
    for index in range(3 * client_token_module._RECENT_VALUES):
        assert client_token(sent(("Authorization", f"Bearer t{index}"))) == ClientToken(f"t{index}", "Bearer")
        assert len(remembered) <= client_token_module._RECENT_VALUES
