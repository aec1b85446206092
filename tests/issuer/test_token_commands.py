"""``labgate token ...`` against the store directly, as an operator runs them."""

from __future__ import annotations

import io

import pytest

from proxy.cli import main
from proxy.issuer.secrets_hash import verify_secret


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
