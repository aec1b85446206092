"""The administrator and the emergency accounts from the config: hashes only, every mistake with its line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from proxy.config import load_config
from tests.conftest import write_config
from tests.gateway.token_service import ADMIN_HASH, EMERGENCY_HASH
from tests.test_config import problems_for

ISSUER = {"url": "https://labgate.lab.example"}


def with_issuer(**section: Any) -> Any:
    def mutate(document: dict[str, Any]) -> None:
        document["issuer"] = {**ISSUER, **section}

    return mutate


def test_admin_and_emergency_accounts_load_and_hide_their_hashes(tmp_path: Path) -> None:
    path = write_config(
        tmp_path, "http://127.0.0.1:9",
        issuer={
            **ISSUER,
            "admin": {"username": "admin", "password_hash": ADMIN_HASH, "prefix": "/manage/tokens"},
            "emergency_accounts": [{"username": "svtcli", "password_hash": EMERGENCY_HASH}],
        },
    )
    issuer = load_config(path).issuer
    assert issuer is not None and issuer.admin is not None
    assert (issuer.admin.username, issuer.admin.prefix, issuer.admin.password_hash) == ("admin", "/manage/tokens", ADMIN_HASH)
    assert [(a.username, a.password_hash) for a in issuer.emergency_accounts] == [("svtcli", EMERGENCY_HASH)]
    assert ADMIN_HASH not in repr(issuer) and EMERGENCY_HASH not in repr(issuer)


def test_defaults_no_admin_api_and_no_emergency_accounts(tmp_path: Path) -> None:
    issuer = load_config(write_config(tmp_path, "http://127.0.0.1:9", issuer=ISSUER)).issuer
    assert issuer is not None and issuer.admin is None and issuer.emergency_accounts == ()
    with_admin = load_config(write_config(tmp_path, "http://127.0.0.1:9", issuer={**ISSUER, "admin": {"username": "a", "password_hash": ADMIN_HASH}}))
    assert with_admin.issuer is not None and with_admin.issuer.admin is not None and with_admin.issuer.admin.prefix == "/-/admin"


ADMIN = {"username": "admin", "password_hash": ADMIN_HASH}
BAD = [
    ("plain_password", {"admin": {"username": "admin", "password": "hunter2"}}, "unknown key 'password'"),
    ("no_hash", {"admin": {"username": "admin"}}, "password_hash is required"),
    ("not_a_hash", {"admin": {**ADMIN, "password_hash": "hunter2-pasted-here"}}, "not a scrypt$n$r$p$salt$hash value"),
    ("colon_in_name", {"admin": {**ADMIN, "username": "ad:min"}}, "without ':' or spaces"),
    ("no_name", {"admin": {"password_hash": ADMIN_HASH}}, "missing required key 'username'"),
    ("root_prefix", {"admin": {**ADMIN, "prefix": "/"}}, "must name a path below '/'"),
    ("prefix_with_dots", {"admin": {**ADMIN, "prefix": "/a/../b"}}, "dot segments"),
    ("prefix_over_jwks", {"admin": {**ADMIN, "prefix": "/.well-known"}}, "overlaps the issuer's own paths"),
    ("unknown_key", {"admin": {**ADMIN, "realm": "x"}}, "unknown key 'realm' in issuer.admin"),
    ("account_twice", {"emergency_accounts": [{"username": "a", "password_hash": EMERGENCY_HASH}] * 2}, "listed twice"),
    ("account_not_a_mapping", {"emergency_accounts": ["svtcli"]}, "a mapping {username, password_hash}"),
    ("account_without_hash", {"emergency_accounts": [{"username": "svtcli"}]}, "password_hash is required"),
]


@pytest.mark.parametrize("section, expected", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_accounts_are_refused_with_their_line(tmp_path: Path, section: dict[str, Any], expected: str) -> None:
    problems = problems_for(tmp_path, with_issuer(**section))
    assert any(expected in p for p in problems), problems
    assert all(str(tmp_path / "labgate.yaml") + ":" in p for p in problems if expected in p)
    assert not any("hunter2" in p for p in problems)


def test_the_admin_prefix_cannot_overlap_an_upstream_or_an_endpoint(tmp_path: Path) -> None:
    def overlap(document: dict[str, Any]) -> None:
        with_issuer(admin={**ADMIN, "prefix": "/demo/admin"})(document)
        document["endpoints"] = {"metrics": "/demo/admin/metrics"}

    problems = problems_for(tmp_path, overlap)
    assert any("path_prefix '/demo' overlaps issuer.admin.prefix /demo/admin" in p for p in problems), problems
    assert any("endpoint /demo/admin/metrics overlaps issuer.admin.prefix" in p for p in problems), problems
