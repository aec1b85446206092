"""A token's own endpoint entries: whole segments, or Commvault's "starting with", and the mock agrees.

Commvault's documentation ('Creating an access token for a service account'):
"For a custom scope, specify the endpoints that you want to allow with this
access token by entering each endpoint on a new line. For example, if you
enter /plans, you can execute all plan operation REST APIs starting with /plan."
"""

from __future__ import annotations

import pytest

from proxy.mocks.commvault_scope import custom_entry_opens
from proxy.paths import parse_target
from proxy.policy.endpoints import (
    STARTING_WITH,
    WHOLE_SEGMENTS,
    entry_opens,
    entry_stem,
)
from proxy.policy.load import load_pack_text

# (entry, path, opened?) — read the Commvault way.
STARTING_WITH_CASES = [
    ("/plans", "/Plan", True),
    ("/plans", "/plans", True),
    ("/plans", "/PlanSummary", True),
    ("/plans", "/Plan/7/Rules", True),
    ("/plans", "/V2/Plan", True),
    ("/plans", "/v4/plan/7", True),
    ("/plans", "/ServerPlan", False),
    ("/plans", "/Subclient/Plan", False),
    ("/plans", "/V2/Client", False),
    ("/plans", "/V2/V4/Plan", False),
    ("/plans", "/Pla", False),
    ("/plans", "/", False),
    ("/Client", "/ClientGroup", True),
    ("/Client", "/client/5", True),
    ("/ClientGroup", "/Client", False),
    ("/V2/Plan", "/Plan", False),
    ("/V2/Plan", "/V2/PlanSummary", True),
    ("/V4/Storage/HyperScale", "/V4/StoragePool/HyperScale", False),
    ("/V4/Storage/HyperScale", "/V4/Storage/HyperScaleNodes/1", True),
    ("/AccessToken", "/V4/AccessToken/Renew", True),
    ("/s", "/Subclient", True),   # an entry of one letter keeps its letter: never a stem of nothing
    ("/s", "/Client", False),
    ("/", "/anything/at/all", True),
]


def segments(path: str) -> tuple[str, ...]:
    return parse_target(path).segments


@pytest.mark.parametrize("entry, path, opened", STARTING_WITH_CASES, ids=[f"{e} {p}" for e, p, _ in STARTING_WITH_CASES])
def test_an_entry_opens_what_starts_with_it_as_commvault_documents(entry: str, path: str, opened: bool) -> None:
    assert entry_opens(STARTING_WITH, entry, segments(path), True) is opened


@pytest.mark.parametrize("entry, path, opened", STARTING_WITH_CASES, ids=[f"{e} {p}" for e, p, _ in STARTING_WITH_CASES])
def test_the_mock_commvault_reads_entries_the_same_way(entry: str, path: str, opened: bool) -> None:
    assert custom_entry_opens(entry, path.casefold()) is opened


def test_the_stem_drops_one_plural_s_only() -> None:
    assert [entry_stem(s) for s in ("plans", "Plans", "Client", "s", "ss")] == ["plan", "Plan", "Client", "s", "s"]


def test_whole_segments_stay_the_default_reading() -> None:
    assert entry_opens(WHOLE_SEGMENTS, "/Client", segments("/Client/5"), True)
    assert not entry_opens(WHOLE_SEGMENTS, "/Client", segments("/ClientGroup"), True)
    assert not entry_opens(WHOLE_SEGMENTS, "/plans", segments("/Plan"), True)
    pack = load_pack_text("pack: p\ntoken_types:\n  t:\n    path_prefixes: [/]\n")
    assert pack.token_types["t"].token_prefix_match == WHOLE_SEGMENTS


def test_case_sensitive_packs_compare_entries_case_sensitively() -> None:
    assert entry_opens(STARTING_WITH, "/plans", segments("/plan"), False)
    assert not entry_opens(STARTING_WITH, "/plans", segments("/Plan"), False)
