"""Commvault access-token rules without HTTP: creating, editing, and what renewal refuses."""

from __future__ import annotations

from typing import Any

import pytest

from proxy.mocks.commvault_tokens import AccessTokenBook, Refusal, TokenChain

NOW = 1_800_000_000.0


def book() -> AccessTokenBook:
    return AccessTokenBook(access_lifetime=1800, clock=lambda: NOW)


def created(tokens: AccessTokenBook, **request: Any) -> TokenChain:
    chain = tokens.create("svc", 2, {"tokenName": "t", **request})
    assert isinstance(chain, TokenChain)
    return chain


def test_info_shows_the_tokens_only_when_asked() -> None:
    chain = created(book())
    assert {"accessToken", "refreshToken"} <= set(chain.info(secrets_too=True))
    assert not {"accessToken", "refreshToken"} & set(chain.info(secrets_too=False))


def test_type_2_is_all_too_and_keeps_no_endpoints() -> None:
    chain = created(book(), tokenType=2, apiEndpoints=["/Client"])
    assert chain.refresh is not None and chain.api_endpoints == []


@pytest.mark.parametrize(
    "edit",
    [{"tokenName": " "}, {"apiEndpoints": "/Client"}, {"apiEndpoints": []}, {"renewableUntilTimestamp": NOW - 1},
     {"renewableUntilTimestamp": True}, []],
    ids=["blank-name", "endpoints-not-a-list", "custom-without-endpoints", "renewable-until-past", "renewable-until-bool", "not-an-object"],
)
def test_an_invalid_edit_changes_nothing(edit: Any) -> None:
    tokens = book()
    chain = created(tokens, tokenType=3, apiEndpoints=["/V2/Plan"])
    assert isinstance(tokens.edit(chain, edit), Refusal)
    assert (chain.name, chain.api_endpoints, chain.renewable_until) == ("t", ["/V2/Plan"], NOW + 90 * 86400)


def test_a_fixed_lifetime_token_has_no_renewal_limit_to_edit() -> None:
    tokens = book()
    chain = created(tokens, tokenType=4)
    refused = tokens.edit(chain, {"renewableUntilTimestamp": NOW + 3600})
    assert isinstance(refused, Refusal) and refused.status == 400


@pytest.mark.parametrize(
    "request_body, status",
    [(None, 400), ({"accessToken": "a"}, 400), ({"accessToken": "unknown", "refreshToken": "x"}, 401)],
    ids=["no-body", "no-refresh-token", "unknown-access-token"],
)
def test_renewal_refusals(request_body: Any, status: int) -> None:
    refused = book().renew(request_body)
    assert isinstance(refused, Refusal) and refused.status == status


def test_a_refresh_token_of_another_chain_does_not_renew() -> None:
    tokens = book()
    one, other = created(tokens), created(tokens)
    refused = tokens.renew({"accessToken": one.access, "refreshToken": other.refresh})
    assert isinstance(refused, Refusal) and refused.status == 401
    assert not one.dead and not other.dead  # a wrong pair is not a replayed one
