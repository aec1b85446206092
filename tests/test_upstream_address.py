"""An upstream's url and host: a host no resolver accepts is refused by labgate check, not at the first request."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml

from proxy.cli import main
from proxy.upstream_address import host_problem, unreachable_detail
from tests.conftest import write_config


@pytest.mark.parametrize("host", ["svt.lab.example", "svt-a.lab.example.", "a_b.lab", "localhost", "10.0.0.20", "2001:db8::1"])
def test_hosts_that_name_a_machine_pass(host: str) -> None:
    assert host_problem(host) is None


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("my host", "contains a space"),
        ("bad..host", "is not a DNS name"),
        ("-x.lab", "is not a DNS name"),
        ("x-.lab", "is not a DNS name"),
        ("a" * 64 + ".lab", "is not a DNS name"),
        ("svt.lab.example:8443", "is not a DNS name"),
    ],
)
def test_hosts_no_resolver_accepts_are_refused(host: str, expected: str) -> None:
    assert expected in (host_problem(host) or "")


def check(tmp_path: Path, capsys: pytest.CaptureFixture[str], **upstream: str) -> tuple[int, str]:
    path = write_config(tmp_path, "http://127.0.0.1:9")
    document = yaml.safe_load(path.read_text())
    document["upstreams"][0].update(upstream)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    code = main(["check", "--config", str(path)])
    return code, capsys.readouterr().err


def test_check_refuses_an_upstream_url_whose_host_has_a_space(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check(tmp_path, capsys, url="https://svt lab.example/api")
    assert code == 1
    assert "url 'https://svt lab.example/api': host 'svt lab.example' contains a space" in err
    assert f"{tmp_path / 'labgate.yaml'}:" in err.splitlines()[0]  # file:line, like every check message


def test_check_refuses_a_host_key_that_is_not_a_host(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check(tmp_path, capsys, host="svt_lab example")
    assert code == 1 and "host 'svt_lab example' contains a space" in err


@pytest.mark.parametrize("host", ["[2001:db8::1]", "SVT.Lab.Example"])
def test_check_accepts_a_bracketed_ipv6_host_and_any_letter_case(tmp_path: Path, capsys: pytest.CaptureFixture[str], host: str) -> None:
    code, err = check(tmp_path, capsys, host=host)
    assert (code, err) == (0, "")


def test_an_unresolvable_host_is_named_in_the_unreachable_detail() -> None:
    failure = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    detail = unreachable_detail("svt", failure, "svt.lab.example")
    assert detail == (
        "upstream 'svt' is unreachable: its host 'svt.lab.example' does not resolve (check the upstream's url and the DNS)"
    )


def test_a_resolver_failure_wrapped_by_another_error_is_still_named() -> None:
    wrapped = OSError("connect failed")
    wrapped.__cause__ = socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    assert "its host 'svt.lab.example' does not resolve" in unreachable_detail("svt", wrapped, "svt.lab.example")


def test_other_connection_failures_keep_their_kind() -> None:
    assert unreachable_detail("svt", ConnectionRefusedError(111, "refused"), "10.0.0.20") == (
        "upstream 'svt' is unreachable (ConnectionRefusedError)"
    )
