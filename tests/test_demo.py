"""``labgate demo``: the lab walks through every family as its pack says, and its curl lines work as printed."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from proxy.config import load_config
from proxy.demo import LAB_CONFIG
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parent.parent


def lab_on_free_ports(tmp_path: Path) -> Path:
    """deploy/examples/lab.yaml, moved to free loopback ports (the shipped one uses fixed ones)."""
    document = yaml.safe_load(LAB_CONFIG.read_text())
    document["listen"]["port"] = free_port()
    document["policies"] = [str(ROOT / "policies")]
    for upstream in document["upstreams"]:
        old = re.match(r"http://127\.0\.0\.1:(\d+)", upstream["url"])
        assert old is not None
        new = f"http://127.0.0.1:{free_port()}"
        upstream["url"] = new + upstream_path(old.group(0), upstream)
        source = upstream["token_source"]
        if "jwks_url" in source:
            source["jwks_url"] = source["jwks_url"].replace(old.group(0), new)
        if "credential" in upstream:
            upstream["credential"]["token_file"] = str(LAB_CONFIG.parent / upstream["credential"]["token_file"])
    document["issuer"]["url"] = f"http://127.0.0.1:{document['listen']['port']}"
    path = tmp_path / "lab.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def upstream_path(origin: str, upstream: dict[str, object]) -> str:
    """What follows the origin in the upstream's url (Commvault's /commandcenter/api)."""
    url = upstream["url"]
    assert isinstance(url, str)
    return url[len(origin):]


def demo(*args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k != "AIOHTTP_NO_EXTENSIONS"}
    return subprocess.Popen(
        [sys.executable, "-m", "proxy.cli", "demo", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    )


def test_the_shipped_lab_config_checks_clean_with_one_upstream_per_family() -> None:
    config = load_config(LAB_CONFIG)
    for upstream in config.upstreams:
        assert upstream.pack == upstream.name
        assert upstream.url.host == "127.0.0.1"
    assert {u.name for u in config.upstreams} == {"simplivity", "vcf", "hcp", "greenlake", "commvault"}


def test_every_family_behaves_as_its_pack_says(tmp_path: Path) -> None:
    process = demo("--config", str(lab_on_free_ports(tmp_path)), "--check")
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    steps = re.findall(r"^# .*: (\d{3})(?: (\w+))? \[(.*)\]$", output, re.MULTILINE)
    assert len(steps) == 16 and all(mark == "ok" for *_, mark in steps), output
    denials = [reason for _, reason, _ in steps if reason]
    assert denials == ["query_param_not_allowed", "method_not_allowed", "prefix_not_allowed", "route_not_allowed", "prefix_not_allowed"]


def test_the_printed_curl_lines_work_and_ctrl_c_stops_the_lab(tmp_path: Path) -> None:
    process = demo("--config", str(lab_on_free_ports(tmp_path)))
    assert process.stdout is not None
    lines: list[str] = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
            if line.startswith("Serving until Ctrl-C"):
                break
        commands = [line for line in lines if re.match(r"^(\w+=\$\(curl |curl )", line)]
        assert len(commands) == 16
        # Pasted as printed: each family's token, then its allowed and denied requests.
        script = "set -e\n" + "".join(line if "=$(" in line else line.rstrip("\n") + "; echo\n" for line in commands)
        ran = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60)
        assert ran.returncode == 0, ran.stderr
        answers = [a for a in ran.stdout.splitlines() if a.strip()]
        reasons = [re.search(r'"reason": "(\w+)"', a) for a in answers]
        assert [r.group(1) for r in reasons if r] == [
            "query_param_not_allowed", "method_not_allowed", "prefix_not_allowed", "route_not_allowed", "prefix_not_allowed"
        ]
        assert len(answers) == 11  # two per family, and the new service account
    finally:
        process.send_signal(signal.SIGINT)
        rest, _ = process.communicate(timeout=30)
    assert process.returncode == 0
    assert "labgate demo: stopping" in rest
