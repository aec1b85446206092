"""``labgate token ...`` against the store directly, as an operator runs them."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from proxy.cli import main
from proxy.issuer import directory
from proxy.issuer.secrets_hash import verify_secret
from proxy.store.sqlite import SqliteStore
from tests.conftest import GatewayStarter, RecordingUpstream, free_port, write_config
from tests.gateway.token_service import (
    ISSUER_SOURCE,
    LAB_PACK,
    api_get,
    issuer_section,
    start_token_service,
    wait_until,
)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_hash_password_reads_stdin_and_prints_a_verifiable_hash(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("emergency pw\n"))
    code, out, err = run(capsys, "token", "hash-password")
    assert code == 0 and err == ""
    encoded = out.strip()
    assert encoded.startswith("scrypt$") and verify_secret("emergency pw", encoded)
    assert "emergency pw" not in out


def test_hash_password_prompts_twice_at_a_terminal(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["typed pw", "typed pw"])
    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    code, out, _ = run(capsys, "token", "hash-password")
    assert code == 0 and verify_secret("typed pw", out.strip())


def test_hash_password_refuses_differing_entries_and_empty_input(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    answers = iter(["one", "two"])
    monkeypatch.setattr("sys.stdin", Terminal())
    monkeypatch.setattr("getpass.getpass", lambda prompt: next(answers))
    code, out, err = run(capsys, "token", "hash-password")
    assert (code, out) == (2, "") and "differ" in err and "one" not in err
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    code, out, err = run(capsys, "token", "hash-password")
    assert (code, out) == (2, "") and "nothing given" in err


def test_hash_password_takes_no_password_argument(capsys: pytest.CaptureFixture[str]) -> None:
    """A password on the command line would sit in shell history and ps output."""
    with pytest.raises(SystemExit) as exited:
        main(["token", "hash-password", "secret-on-argv"])
    assert exited.value.code == 2
    capsys.readouterr()


def test_hash_password_refuses_an_absurdly_long_password(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("x" * 2000 + "\n"))
    code, out, err = run(capsys, "token", "hash-password")
    assert (code, out) == (2, "") and "1024 bytes" in err and "xxxx" not in err


# -- subjects, clients and break-glass tokens, straight in the store ---------------


def lab_config(tmp_path: Path, **store: Any) -> str:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / "lab.yaml").write_text(LAB_PACK)
    extra = {"store": store} if store else {}
    path = write_config(
        tmp_path, "http://127.0.0.1:9", upstream={"pack": "lab", "token_source": ISSUER_SOURCE}, issuer=issuer_section(), **extra
    )
    return str(path)


def stored(tmp_path: Path, work: Any) -> Any:
    async def read() -> Any:
        store = SqliteStore(tmp_path / "labgate.db")
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(read())


def test_subjects_add_list_delete(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    config = lab_config(tmp_path)
    monkeypatch.setattr("sys.stdin", io.StringIO("alice-pw\n"))
    code, out, _ = run(capsys, "token", "subjects", "add", "alice", "--password", "--config", config)
    assert (code, out) == (0, "added subject alice with a password\n")
    code, out, _ = run(capsys, "token", "subjects", "add", "svc", "--config", config)
    assert code == 0 and "no password" in out
    code, _, err = run(capsys, "token", "subjects", "add", "alice", "--config", config)
    assert code == 2 and "exists already" in err
    code, out, _ = run(capsys, "token", "subjects", "list", "--config", config, "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [(r["name"], r["has_password"]) for r in rows] == [("alice", True), ("svc", False)]
    assert "alice-pw" not in out and "scrypt" not in out
    subject = stored(tmp_path, lambda store: directory.get_subject(store, "alice", now=time.time()))
    assert subject.password_hash is not None and verify_secret("alice-pw", subject.password_hash)
    code, out, _ = run(capsys, "token", "subjects", "delete", "alice", "--config", config)
    assert code == 0 and out.startswith("deleted subject alice and 0 API client(s)")
    assert stored(tmp_path, lambda store: store.revoked_at("subject", "alice", time.time())) is not None
    code, _, err = run(capsys, "token", "subjects", "delete", "alice", "--config", config)
    assert code == 2 and "no subject 'alice'" in err
    code, out, _ = run(capsys, "token", "subjects", "list", "--config", config)
    assert out.splitlines()[0].split() == ["NAME", "HAS_PASSWORD", "CREATED_AT"] and "svc" in out


def test_clients_add_list_reset_delete(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = lab_config(tmp_path)
    run(capsys, "token", "subjects", "add", "alice", "--config", config)
    code, out, err = run(capsys, "token", "clients", "add", "--name", "backup job", "--subject", "alice", "--config", config)
    assert code == 0 and "shown this once" in err
    client_id, secret = (line.split(": ", 1)[1] for line in out.splitlines())
    code, out, _ = run(capsys, "token", "clients", "list", "--config", config, "--json")
    [row] = [json.loads(line) for line in out.splitlines()]
    assert (row["client_id"], row["name"], row["subject"]) == (client_id, "backup job", "alice")
    assert secret not in out and "scrypt" not in out
    code, out, _ = run(capsys, "token", "clients", "reset-secret", client_id, "--config", config)
    new_secret = out.splitlines()[1].split(": ", 1)[1]
    assert code == 0 and new_secret != secret
    record = stored(tmp_path, lambda store: directory.get_client(store, client_id, now=time.time()))
    assert verify_secret(new_secret, record.secret_hash) and not verify_secret(secret, record.secret_hash)
    assert stored(tmp_path, lambda store: store.revoked_at("client", client_id, time.time())) is not None
    assert run(capsys, "token", "clients", "delete", client_id, "--config", config)[0] == 0
    assert run(capsys, "token", "clients", "delete", client_id, "--config", config)[0] == 2
    code, _, err = run(capsys, "token", "clients", "add", "--name", "x", "--subject", "nobody", "--config", config)
    assert code == 2 and "create it first" in err
    code, _, err = run(capsys, "token", "clients", "add", "--name", "x", "--subject", "alice", "--audience", "nowhere", "--config", config)
    assert code == 2 and "audience" in err


def test_issue_mints_a_token_of_the_type_and_prints_it_once(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = lab_config(tmp_path)
    code, out, err = run(capsys, "token", "issue", "--config", config, "--upstream", "demo", "--subject", "oncall", "--token-type", "emergency")
    assert code == 0 and len(out.splitlines()) == 1
    token = out.strip()
    claims = jwt.decode(token, options={"verify_signature": False})
    assert (claims["sub"], claims["aud"], claims["token_type"], claims["client_id"]) == ("oncall", "demo", "emergency", "labgate-cli")
    assert claims["exp"] - claims["iat"] == 86400 and token not in err  # the type's absolute 24h (no ttl)
    code, out, _ = run(capsys, "token", "issue", "--config", config, "--upstream", "demo", "--subject", "oncall",
                       "--token-type", "operator", "--lifetime", "5m")
    assert code == 0
    said = jwt.decode(out.strip(), options={"verify_signature": False})
    assert said["exp"] - said["iat"] == 300


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--upstream", "nowhere", "--subject", "s", "--token-type", "operator"], "--upstream"),
        (["--upstream", "demo", "--subject", "s", "--token-type", "root"], "takes no token type 'root'"),
        (["--upstream", "demo", "--subject", "a b", "--token-type", "operator"], "--subject"),
        (["--upstream", "demo", "--subject", "s", "--token-type", "operator", "--lifetime", "400d"], "access_token_max_lifetime"),
        (["--upstream", "demo", "--subject", "s", "--token-type", "operator", "--lifetime", "soon"], "--lifetime"),
    ],
    ids=["unknown-upstream", "unknown-type", "bad-subject", "too-long", "not-a-duration"],
)
def test_issue_refuses_what_labgate_would_not_sign(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    code, out, err = run(capsys, "token", "issue", "--config", lab_config(tmp_path), *argv)
    assert (code, out) == (2, "") and message in err


def test_an_unreachable_store_is_exit_1_and_a_config_without_issuer_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = lab_config(tmp_path, type="redis", url=f"redis://127.0.0.1:{free_port()}/0")
    code, _, err = run(capsys, "token", "subjects", "list", "--config", config)
    assert code == 1 and "not listed" in err
    (tmp_path / "plain").mkdir()
    plain = str(write_config(tmp_path / "plain", "http://127.0.0.1:9"))
    code, _, err = run(capsys, "token", "clients", "list", "--config", plain)
    assert code == 2 and "has no 'issuer' section" in err


async def test_a_break_glass_token_works_and_a_cli_subject_delete_kills_it(
    start_http1_gateway: GatewayStarter, upstream: RecordingUpstream, tmp_path: Path
) -> None:
    running = await start_token_service(start_http1_gateway, tmp_path, upstream.url, source=ISSUER_SOURCE)
    config = str(running.config.file)
    issue = ["token", "issue", "--config", config, "--upstream", "demo", "--subject", "oncall", "--token-type", "operator"]
    code = await asyncio.to_thread(main, ["token", "subjects", "add", "oncall", "--config", config])
    assert code == 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert await asyncio.to_thread(main, issue) == 0
    token = out.getvalue().strip()
    assert (await api_get(running, "/demo/api/hosts", token))[0] == 200
    assert await asyncio.to_thread(main, ["token", "subjects", "delete", "oncall", "--config", config]) == 0

    async def refused() -> bool:
        status, body = await api_get(running, "/demo/api/hosts", token)
        return status == 401 and body["reason"] == "revoked"

    await wait_until(refused)  # another process: within the half second a replica caches "not revoked"
