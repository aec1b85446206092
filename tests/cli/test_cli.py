"""``labgate check`` and ``labgate explain`` as an operator runs them."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from proxy.cli import main
from tests.conftest import mint, write_config

QUICKSTART = Path(__file__).parent.parent.parent / "deploy" / "examples" / "quickstart.yaml"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_check_clean_config_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "--config", str(QUICKSTART))
    assert code == 0 and "ok" in out


def test_check_reports_file_and_line_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, "http://127.0.0.1:9")
    (tmp_path / "policies" / "demo.yaml").write_text("pack: demo\ntoken_types:\n  t:\n    routes:\n      - FETCH /x\n")
    code, _, err = run(capsys, "check", "--config", str(path))
    assert code == 1
    assert f"{tmp_path / 'policies' / 'demo.yaml'}:5: route 'FETCH /x'" in err
    assert str(path) in err  # the upstream's unknown types are reported against the config too


def test_check_usage_error_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        main(["check"])
    assert caught.value.code == 2


@pytest.mark.parametrize(
    "token_type, method, target, code, reason, rule",
    [
        ("emergency", "GET", "/api/hosts?offset=0&limit=10", 0, "allowed", "simplivity/emergency/routes/GET /api/hosts"),
        ("emergency", "GET", "/api/hosts?sort=name", 3, "query_param_not_allowed", "simplivity/emergency/query"),
        ("emergency", "DELETE", "/api/backups/b1", 3, "route_not_allowed", "simplivity/emergency/routes"),
        ("emergency", "GET", "/api/%2e%2e/hosts", 3, "ambiguous_path", None),
        ("emergency", "TRACE", "/api/hosts", 3, "method_not_supported", None),
        ("password", "GET", "/api/hosts?sort=name&order=descending", 0, "allowed", "simplivity/password/path_prefixes//api"),
    ],
    ids=["allowed", "sort_denied", "delete_denied", "ambiguous_path", "trace", "password_full_api"],
)
def test_explain_prints_one_json_object(
    capsys: pytest.CaptureFixture[str], token_type: str, method: str, target: str, code: int, reason: str, rule: str | None
) -> None:
    exit_code, out, _ = run(
        capsys, "explain", "--config", str(QUICKSTART), "--upstream", "simplivity", "--token-type", token_type, method, target
    )
    result = json.loads(out)
    assert exit_code == code
    assert set(result) == {"allowed", "status", "reason", "rule", "token_type"}
    assert (result["reason"], result["rule"]) == (reason, rule)


def test_explain_verifies_a_real_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, "http://127.0.0.1:9")
    code, out, _ = run(capsys, "explain", "--config", str(path), "--upstream", "demo", "--token", mint({"role": "admin"}), "DELETE", "/api/x")
    assert code == 0 and json.loads(out)["token_type"] == "admin"
    expired = mint({"exp": 1000})
    code, out, err = run(capsys, "explain", "--config", str(path), "--upstream", "demo", "--token", expired, "GET", "/api/hosts")
    assert code == 3 and json.loads(out)["reason"] == "token_expired"
    assert expired not in out + err


def test_explain_with_ip(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, "http://127.0.0.1:9")
    args = ["explain", "--config", str(path), "--upstream", "demo", "--token-type", "office"]
    assert run(capsys, *args, "--ip", "10.9.1.1", "GET", "/api/hosts")[0] == 0
    assert run(capsys, *args, "--ip", "10.8.1.1", "GET", "/api/hosts")[0] == 3
    assert run(capsys, *args, "--ip", "010.9.1.1", "GET", "/api/hosts")[0] == 2


@pytest.mark.parametrize(
    "argv",
    [
        ["--upstream", "nope", "--token-type", "emergency", "GET", "/api/hosts"],
        ["--upstream", "simplivity", "--token-type", "ghost", "GET", "/api/hosts"],
    ],
    ids=["unknown_upstream", "unknown_type"],
)
def test_explain_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    assert run(capsys, "explain", "--config", str(QUICKSTART), *argv)[0] == 2


def test_explain_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("listen: [\n")
    code, _, err = run(capsys, "explain", "--config", str(bad), "--upstream", "x", "--token-type", "y", "GET", "/")
    assert code == 2 and f"{bad}:" in err


def serve(config: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != "AIOHTTP_NO_EXTENSIONS"} | env
    return subprocess.run(
        [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config)],
        env=environment, capture_output=True, text=True, timeout=30,
    )


def test_serve_refuses_the_pure_python_http_parser(tmp_path: Path) -> None:
    result = serve(write_config(tmp_path, "http://127.0.0.1:9"), AIOHTTP_NO_EXTENSIONS="1")
    assert result.returncode == 2
    assert "C HTTP parser is not active" in result.stderr


def test_serve_with_a_bad_config_exits_2(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("listen: {port: many}\n")
    result = serve(path)
    assert result.returncode == 2
    assert f"{path}:1:" in result.stderr


def test_serve_on_a_busy_port_exits_2(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = serve(write_config(tmp_path, "http://127.0.0.1:9", listen={"address": "127.0.0.1", "port": port}))
    assert result.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_serve_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    config = write_config(tmp_path, "http://127.0.0.1:9")
    environment = {k: v for k, v in os.environ.items() if k != "AIOHTTP_NO_EXTENSIONS"}
    process = subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "serve", "--config", str(config)],
        env=environment, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert process.stderr is not None
        for _ in range(100):  # the listening line comes within a few seconds
            line = process.stderr.readline()
            if "labgate listening on" in line or not line:
                break
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        assert process.stderr is not None
        process.stderr.close()


def test_explain_says_what_a_shadow_type_would_have_been_denied_for(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, "http://127.0.0.1:9")
    pack = tmp_path / "policies" / "demo.yaml"
    pack.write_text(pack.read_text().replace("  reader:\n", "  reader:\n    shadow: true\n"))
    args = ["explain", "--config", str(path), "--upstream", "demo", "--token-type", "reader"]
    code, out, err = run(capsys, *args, "GET", "/api/hosts?sort=name")
    assert code == 0  # forwarded
    assert json.loads(out) == {
        "allowed": True, "status": 200, "reason": "query_param_not_allowed", "rule": "demo/reader/query",
        "token_type": "reader", "shadow": True,
    }
    assert "shadow mode: forwarded, but reader would be denied with 403 query_param_not_allowed" in err
    code, out, _ = run(capsys, *args, "GET", "/api/hosts?limit=1")
    assert code == 0 and "shadow" not in json.loads(out)
    code, out, _ = run(capsys, *args, "GET", "/api/%2e%2e/hosts")
    assert code == 3 and json.loads(out)["reason"] == "ambiguous_path"  # the path contract is never shadowed


POLICY_PACK = "pack: demo\ntoken_types:\n  reader:\n    routes: [GET /api/hosts]\n    query: {allow: [limit]}\n"
POLICY_CASES = """\
pack: demo
cases:
  - name: reader lists hosts
    token_type: reader
    request: GET /api/hosts?limit=1
    expect: {decision: allow, rule: demo/reader/routes/GET /api/hosts}
  - name: reader cannot sort
    token_type: reader
    request: GET /api/hosts?sort=name
    expect: {decision: deny, reason: query_param_not_allowed, rule: demo/reader/query}
"""


def policy_folder(tmp_path: Path, cases: str = POLICY_CASES) -> Path:
    folder = tmp_path / "policies"
    folder.mkdir()
    (folder / "demo.yaml").write_text(POLICY_PACK)
    (folder / "demo.tests.yaml").write_text(cases)
    return folder


def test_test_passes_and_prints_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = policy_folder(tmp_path)
    code, out, err = run(capsys, "test", str(folder))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{folder / 'demo.yaml'}: pack 'demo': 2 cases, 0 failed; 2/2 rules covered",
        "1 pack, 2 cases: 2 passed, 0 failed; 0 rules uncovered",
    ]


def test_test_reads_policies_in_the_current_folder_by_default(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    policy_folder(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(capsys, "test")
    assert code == 0 and out.startswith("policies/demo.yaml: pack 'demo': 2 cases")


def test_test_prints_each_failing_case_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = policy_folder(tmp_path, POLICY_CASES.replace("rule: demo/reader/query}", "rule: demo/reader/routes}"))
    code, out, _ = run(capsys, "test", str(folder / "demo.tests.yaml"))
    assert code == 1
    assert out.splitlines()[0] == (
        f"{folder / 'demo.tests.yaml'}:7: case 'reader cannot sort': expected deny query_param_not_allowed "
        "(rule demo/reader/routes), got deny query_param_not_allowed (rule demo/reader/query): "
        "query parameter 'sort' is not allowed"
    )
    assert out.splitlines()[-1] == "1 pack, 2 cases: 1 passed, 1 failed; 0 rules uncovered"


def test_test_fails_on_an_uncovered_rule_unless_told_to_allow_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = policy_folder(tmp_path, POLICY_CASES.split("  - name: reader cannot sort")[0])
    code, out, _ = run(capsys, "test", str(folder / "demo.yaml"))
    assert code == 1
    assert f"{folder / 'demo.yaml'}:5: rule 'demo/reader/query' decided no case" in out.splitlines()
    code, out, _ = run(capsys, "test", "--allow-uncovered", str(folder / "demo.yaml"))
    assert code == 0
    assert f"warning: {folder / 'demo.yaml'}:5: rule 'demo/reader/query' decided no case" in out.splitlines()


def test_test_with_a_bad_test_file_exits_2_naming_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = policy_folder(tmp_path, POLICY_CASES.replace("token_type: reader\n    request: GET /api/hosts?sort", "token_type: writer\n    request: GET /api/hosts?sort"))
    code, out, err = run(capsys, "test", str(folder))
    assert (code, out) == (2, "")
    assert err == f"{folder / 'demo.tests.yaml'}:8: token type 'writer' is not in pack 'demo' (known: reader)\n"


@pytest.mark.parametrize("make", ["missing", "empty"])
def test_test_without_packs_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], make: str) -> None:
    target = tmp_path / "policies"
    if make == "empty":
        target.mkdir()
    code, out, err = run(capsys, "test", str(target))
    assert (code, out) == (2, "")
    assert str(target) in err


LIMITED_PACK = (
    "pack: demo\ntoken_types:\n"
    "  reader:\n    routes: [GET /api/hosts]\n    rate_limit: {requests: 600, per: 1h, by: subject}\n"
    "  admin: {path_prefixes: [/api]}\n  office: {routes: [GET /api/hosts]}\n  session: {routes: [GET /api/hosts]}\n"
)


def test_explain_names_the_rate_limits_an_allowed_request_spends(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, "http://127.0.0.1:9", pack_text=LIMITED_PACK, upstream={"rate_limit": "1000/hour"})
    code, out, _ = run(capsys, "explain", "--config", str(path), "--upstream", "demo", "--token-type", "reader", "GET", "/api/hosts")
    assert code == 0
    assert json.loads(out)["rate_limits"] == [
        {"policy": "type:reader", "requests": 600, "per_seconds": 3600.0, "by": "subject", "store_failure": "closed"},
        {"policy": "upstream:demo", "requests": 1000, "per_seconds": 3600.0, "by": "upstream", "store_failure": "closed"},
    ]
    code, out, _ = run(capsys, "explain", "--config", str(path), "--upstream", "demo", "--token-type", "reader", "DELETE", "/api/hosts")
    assert code == 3 and "rate_limits" not in json.loads(out)  # a denied request spends no budget


BAD_UPSTREAM_PROTECTION = [
    ({"rate_limit": "lots"}, "rate_limit 'lots' must be like '60/min'"),
    ({"rate_limit": "0/min"}, "the number of requests must be from 1"),
    ({"rate_limit": "10/fortnight"}, "must be like '60/min'"),
    ({"rate_limit": {"requests": 10}}, "missing required key 'per'"),
    ({"rate_limit": {"requests": -1, "per": "1m"}}, "rate_limit requests must be a whole number"),
    ({"rate_limit": {"requests": 10, "per": "soon"}}, "rate_limit per: bad duration"),
    ({"rate_limit": {"requests": 10, "per": "1m", "by": "subject"}}, "unknown key 'by'"),
    ({"rate_limit": {"requests": 10, "per": "1m", "store_failure": "maybe"}}, "'store_failure' must be one of closed, open"),
    ({"rate_limit": {"requests": 10, "per": "1m", "reserve": 1}}, "rate_limit reserve must be a whole number from 2 to its requests (10), not 1"),
    ({"rate_limit": {"requests": 10, "per": "1m", "reserve": 11}}, "rate_limit reserve must be a whole number from 2 to its requests (10), not 11"),
    ({"rate_limit": {"requests": 10, "per": "1m", "reserve": "64"}}, "rate_limit reserve must be a whole number"),
    ({"max_in_flight": 0}, "max_in_flight must be a whole number from 1"),
    ({"max_in_flight": True}, "max_in_flight must be a whole number from 1"),
    ({"max_in_flight": 4, "queue_timeout": "forever"}, "queue_timeout: bad duration"),
    ({"max_in_flight": 4, "queue_timeout": "2m"}, "queue_timeout must be at most 60s"),
    ({"queue_timeout": "1s"}, "queue_timeout has no effect without max_in_flight"),
]


@pytest.mark.parametrize("upstream, message", BAD_UPSTREAM_PROTECTION, ids=[m for _, m in BAD_UPSTREAM_PROTECTION])
def test_check_reports_bad_protection_values_at_their_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], upstream: dict[str, object], message: str
) -> None:
    path = write_config(tmp_path, "http://127.0.0.1:9", upstream=upstream)
    code, _, err = run(capsys, "check", "--config", str(path))
    assert code == 1 and message in err, err
    key = next(iter(upstream)) if len(upstream) == 1 else "queue_timeout"
    line = next(n for n, text in enumerate(path.read_text().splitlines(), 1) if text.strip().startswith(f"{key}:"))
    assert f"{path}:" in err and any(f"{path}:{n}:" in err for n in range(line, line + 4)), err


BAD_TYPE_PROTECTION = [
    ("rate_limit: 60/minutes", ":5: rate_limit '60/minutes' must be like"),
    ("rate_limit: {requests: 5, per: 1m, by: ip}", ":5: 'by' must be one of token, subject, client_id"),
    ("rate_limit: {requests: 5.5, per: 1m}", ":5: rate_limit requests must be a whole number"),
    ("rate_limit: [60, min]", ":5: rate_limit must be like '60/min'"),
    ("rate_limit: {requests: 50, per: 1s, reserve: 64}", ":5: rate_limit reserve must be a whole number from 2 to its requests (50)"),
    ("rate_limit: {requests: 50, per: 1s, reserve: true}", ":5: rate_limit reserve must be a whole number"),
    ("rate_limit: {requests: 50, per: 1s, reserve: 8.5}", ":5: rate_limit reserve must be a whole number"),
    ("max_in_flight: -3", ":5: max_in_flight must be a whole number"),
]


@pytest.mark.parametrize("entry, message", BAD_TYPE_PROTECTION, ids=[e for e, _ in BAD_TYPE_PROTECTION])
def test_check_reports_bad_type_protection_at_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], entry: str, message: str
) -> None:
    pack = f"pack: demo\ntoken_types:\n  reader:\n    routes: [GET /api/hosts]\n    {entry}\n"
    path = write_config(tmp_path, "http://127.0.0.1:9", pack_text=pack)
    code, _, err = run(capsys, "check", "--config", str(path))
    assert code == 1 and f"{tmp_path / 'policies' / 'demo.yaml'}{message}" in err, err


BAD_NODES = [
    ({"nodes": ["http://127.0.0.1:9"]}, "give url (one node) or nodes, not both"),
    ({"url": None, "nodes": ["ftp://10.0.0.1"]}, "must be http:// or https:// with a host"),
    ({"url": None, "nodes": ["http://10.0.0.1/api", "http://10.0.0.2/other"]}, "same base path as the first"),
    ({"url": None, "nodes": ["http://10.0.0.1", "https://10.0.0.2"]}, "same scheme as the first"),
    ({"url": None, "nodes": ["http://10.0.0.1", "http://10.0.0.1"]}, "is listed twice"),
    ({"url": None, "nodes": []}, "nodes must list from 1 to 64 URLs"),
    ({"url": None, "nodes": ["http://10.0.0.1"], "balance": "random"}, "'balance' must be one of round_robin, least_in_flight"),
    ({"url": None, "nodes": ["http://10.0.0.1"], "node_backoff": "a while"}, "node_backoff: bad duration"),
    ({"url": None, "nodes": ["http://10.0.0.1"], "health": {"path": "/h", "interval": "5s", "timeout": "5s"}}, "health timeout must be shorter"),
    ({"url": None, "nodes": ["http://10.0.0.1"], "health": {"path": "h"}}, "health path 'h' must start with '/'"),
    ({"url": None, "nodes": ["http://10.0.0.1"], "health": {"path": "/h", "expect": [700]}}, "health expect must be a status code"),
    ({"url": None, "nodes": ["http://10.0.0.1"], "health": {"interval": "5s"}}, "missing required key 'path'"),
    ({"balance": "least_in_flight"}, "balance is for an upstream with nodes"),
]


@pytest.mark.parametrize("upstream, message", BAD_NODES, ids=[m for _, m in BAD_NODES])
def test_check_reports_bad_node_settings_with_file_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], upstream: dict[str, object], message: str
) -> None:
    path = write_config(tmp_path, "http://127.0.0.1:9", upstream=upstream)
    code, _, err = run(capsys, "check", "--config", str(path))
    assert code == 1 and message in err, err
    assert any(line.startswith(f"{path}:") and message in line for line in err.splitlines()), err

def test_check_summary_counts_in_words(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "check", "--config", str(QUICKSTART))
    assert code == 0
    assert "(1 upstream, 5 packs, " in out  # not "1 upstreams"
