"""The token service's records: exact JSON round trips, and stored text that is not a record refused."""

from __future__ import annotations

import pytest

from proxy.issuer.records import (
    ClientRecord,
    MalformedRecord,
    RefreshRecord,
    RefreshSpentRecord,
    SubjectRecord,
)

EXAMPLES = [
    SubjectRecord("alice", "scrypt$16384$8$1$c2FsdA==$aGFzaA==", 1_700_000_000.5),
    SubjectRecord("svc", None, 1_700_000_000.0),
    ClientRecord("lgc_abc", "scrypt$...", "alice", "backup job", None, 1_700_000_001.0),
    ClientRecord("lgc_def", "scrypt$...", "alice", "reports", "greenlake", 1_700_000_002.0),
    RefreshRecord(
        "chain-1", "alice", "public-client", "all", "commvault", "commvault", ("all",), ("/V4/Client",), ("10.0.0.0/8",),
        1_700_000_000.0, 1_707_776_000.0, confidential=True, principal="emergency",
    ),
    RefreshRecord("chain-2", "bob", "cli", "password", "svt", "svt", (), None, None, 1.0, 2.0),
    RefreshSpentRecord("chain-1", 1_707_776_000.0),
]


@pytest.mark.parametrize("record", EXAMPLES, ids=lambda r: type(r).__name__)
def test_records_round_trip_through_json(record: SubjectRecord) -> None:
    assert type(record).from_json(record.to_json()) == record


def test_kinds_are_the_store_kinds_the_design_names() -> None:
    kinds = [SubjectRecord.KIND, ClientRecord.KIND, RefreshRecord.KIND, RefreshSpentRecord.KIND]
    assert kinds == ["subject", "client", "refresh", "refresh-spent"]


@pytest.mark.parametrize(
    "text", ["", "[]", "not json", '{"name": "alice"}', '{"name": "a", "password_hash": null, "created_at": 1, "admin": true}'],
    ids=["empty", "a-list", "not-json", "missing-fields", "unknown-field"],
)
def test_stored_text_that_is_not_a_record_is_refused(text: str) -> None:
    with pytest.raises(MalformedRecord):
        SubjectRecord.from_json(text)
