"""``labgate keys init|rotate|list`` against the store directly, as an operator runs them."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import pytest

from proxy.cli import main
from proxy.store.base import SigningKeyRecord
from proxy.store.sqlite import SqliteStore
from tests.conftest import free_port, write_config


def config_file(tmp_path: Path, **issuer: Any) -> Path:
    return write_config(
        tmp_path, "http://127.0.0.1:9", upstream={"token_source": {"type": "issuer"}},
        issuer={"url": "https://labgate.lab.example", **issuer},
    )


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def stored_keys(tmp_path: Path) -> list[SigningKeyRecord]:
    async def read() -> list[SigningKeyRecord]:
        store = SqliteStore(tmp_path / "labgate.db")
        try:
            return await store.signing_keys(time.time())
        finally:
            await store.close()

    return asyncio.run(read())


def assert_no_private_material(text: str, keys: list[SigningKeyRecord]) -> None:
    assert "PRIVATE" not in text and "-----" not in text
    for key in keys:
        for line in key.private_pem.splitlines()[1:-1]:
            assert line not in text


def test_init_makes_the_first_key_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(config_file(tmp_path))
    code, out, _ = run(capsys, "keys", "init", "--config", config)
    [key] = stored_keys(tmp_path)
    assert code == 0 and out == f"made the first signing key {key.kid} (ES256) in the sqlite store\n"
    code, out, _ = run(capsys, "keys", "init", "--config", config)
    assert code == 0 and out == f"the key ring already has an active key: {key.kid}\n"
    assert stored_keys(tmp_path) == [key]


def test_rotate_retires_the_old_key_and_list_shows_both_without_private_material(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = str(config_file(tmp_path, access_token_max_lifetime="1h", algorithm="RS256"))
    run(capsys, "keys", "init", "--config", config)
    code, out, err = run(capsys, "keys", "rotate", "--config", config)
    old, new = stored_keys(tmp_path)
    assert code == 0 and not err
    assert f"new active signing key {new.kid} (RS256) in the sqlite store" in out
    assert f"retired {old.kid}: verifies tokens until " in out
    assert old.usable_until is not None and old.retired_at == new.created_at
    assert old.usable_until - old.retired_at == 3600 + 5 + 5

    code, out, _ = run(capsys, "keys", "list", "--config", config)
    assert code == 0
    header, *rows = out.splitlines()
    assert header.split() == ["KID", "ALGORITHM", "STATE", "CREATED", "RETIRED", "VERIFIES_UNTIL", "ENCRYPTED"]
    assert [row.split()[:3] for row in rows] == [[old.kid, "RS256", "retired"], [new.kid, "RS256", "active"]]
    assert rows[1].split()[4:6] == ["-", "-"]
    assert_no_private_material(out, [old, new])

    code, out, _ = run(capsys, "keys", "list", "--config", config, "--json")
    listed = [json.loads(line) for line in out.splitlines()]
    assert [(k["kid"], k["state"], k["encrypted"]) for k in listed] == [(old.kid, "retired", "no"), (new.kid, "active", "no")]
    assert set(listed[0]) == {"kid", "algorithm", "state", "created", "retired", "verifies_until", "encrypted"}
    assert_no_private_material(out, [old, new])


def test_rotate_with_drop_old_forgets_a_leaked_key_at_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(config_file(tmp_path))
    run(capsys, "keys", "init", "--config", config)
    [leaked] = stored_keys(tmp_path)
    code, out, _ = run(capsys, "keys", "rotate", "--config", config, "--drop-old")
    [fresh] = stored_keys(tmp_path)
    assert code == 0 and fresh.kid != leaked.kid
    assert f"dropped {leaked.kid}: every token it signed is refused within 10 s" in out


def test_rotating_an_empty_ring_makes_its_first_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "keys", "rotate", "--config", str(config_file(tmp_path)))
    [key] = stored_keys(tmp_path)
    assert code == 0 and key.active and "retired" not in out


def test_sealed_keys_are_listed_as_encrypted(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "issuer.passphrase").write_text("a long and random passphrase\n")
    config = str(config_file(tmp_path, key_passphrase_file="issuer.passphrase"))
    run(capsys, "keys", "init", "--config", config)
    code, out, _ = run(capsys, "keys", "list", "--config", config, "--json")
    assert code == 0 and json.loads(out)["encrypted"] == "yes"
    assert "ENCRYPTED PRIVATE KEY" in stored_keys(tmp_path)[0].private_pem


def test_list_of_an_empty_ring_says_how_to_start(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "keys", "list", "--config", str(config_file(tmp_path)))
    assert code == 0 and "no signing keys yet" in out


def test_a_config_without_an_issuer_section_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_config(tmp_path, "http://127.0.0.1:9"))
    for action in ("init", "rotate", "list"):
        code, out, err = run(capsys, "keys", action, "--config", config)
        assert (code, out) == (2, "") and "has no 'issuer' section" in err


def test_a_bad_config_is_reported_with_its_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = config_file(tmp_path, algorithm="HS256")
    code, _, err = run(capsys, "keys", "rotate", "--config", str(config))
    assert code == 2 and f"{config}:" in err and "must be one of ES256, RS256" in err


def test_an_unreachable_store_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = write_config(
        tmp_path, "http://127.0.0.1:9", upstream={"token_source": {"type": "issuer"}},
        issuer={"url": "https://labgate.lab.example"}, store={"type": "redis", "url": f"redis://127.0.0.1:{free_port()}/0"},
    )
    for action, said in (("init", "no key made"), ("rotate", "not rotated"), ("list", "keys not read")):
        code, out, err = run(capsys, "keys", action, "--config", str(config))
        assert (code, out) == (1, "") and said in err


def test_a_store_file_others_can_read_is_warned_about(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(config_file(tmp_path))
    code, _, err = run(capsys, "keys", "init", "--config", config)
    assert code == 0 and err == ""  # labgate creates the file private
    (tmp_path / "labgate.db").chmod(0o644)
    code, _, err = run(capsys, "keys", "rotate", "--config", config)
    assert code == 0 and "is readable by other users" in err and "chmod 600" in err


def test_keys_needs_an_action(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["keys"])
    assert caught.value.code == 2


def test_explain_verifies_labgates_own_tokens_with_the_ring_in_the_store(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from proxy.config import load_config
    from proxy.issuer.access_tokens import mint_access_token
    from proxy.issuer.ring import KeyRing
    from tests.issuer.issuing import grant

    config = config_file(tmp_path)
    issuer = load_config(config).issuer
    assert issuer is not None

    async def token() -> str:
        store = SqliteStore(tmp_path / "labgate.db")
        try:
            return mint_access_token(await KeyRing(store, issuer).signing_key(), issuer, grant(), now=time.time()).token
        finally:
            await store.close()

    code, out, _ = run(capsys, "explain", "--config", str(config), "--upstream", "demo", "--token", asyncio.run(token()),
                       "GET", "/api/hosts")
    assert code == 0 and json.loads(out)["token_type"] == "reader"
