"""deploy/systemd/: the unit is hardened, serves, reloads on SIGHUP and outlasts the drain; systemd-analyze agrees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from proxy.config import ShutdownSettings
from tests.deploy.files import (
    DEPLOY,
    optional_tool,
    stop_deadline,
)

UNIT = DEPLOY / "systemd" / "labgate.service"


def unit_settings() -> dict[str, list[str]]:
    """Every key of the [Service] section with all its values (keys like ExecReload repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if line.startswith("["):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith("#"):
            key, _, value = line.partition("=")
            settings.setdefault(key, []).append(value)
    return settings


HARDENING = {
    "NoNewPrivileges": "yes", "ProtectSystem": "strict", "ProtectHome": "yes", "PrivateTmp": "yes",
    "PrivateDevices": "yes", "ProtectKernelTunables": "yes", "ProtectKernelModules": "yes",
    "ProtectControlGroups": "yes", "RestrictSUIDSGID": "yes", "RestrictNamespaces": "yes",
    "LockPersonality": "yes", "CapabilityBoundingSet": "", "StateDirectory": "labgate", "KillSignal": "SIGTERM",
}


def test_systemd_unit_is_hardened() -> None:
    settings = unit_settings()
    assert {k: settings.get(k, [None])[-1] for k in HARDENING} == HARDENING
    assert settings["User"] != ["root"] and settings["User"]
    assert "@system-service" in settings["SystemCallFilter"]
    assert settings["RestrictAddressFamilies"] == ["AF_INET AF_INET6 AF_UNIX"]


def test_systemd_unit_serves_reloads_on_sighup_and_outlasts_the_drain() -> None:
    settings = unit_settings()
    [serve] = settings["ExecStart"]
    assert serve.split()[1:4] == ["serve", "--config", "/etc/labgate/labgate.yaml"]
    assert settings["ExecReload"][-1] == "/bin/kill -HUP $MAINPID"
    # SIGTERM to the main process only: with --workers it passes it on and waits for them.
    assert settings["KillMode"] == ["mixed"]
    assert int(settings["TimeoutStopSec"][0]) > stop_deadline(ShutdownSettings().drain_seconds)


def test_systemd_unit_verifies(tmp_path: Path) -> None:
    """systemd-analyze accepts every key, once labgate is where ExecStart says (here: this venv)."""
    analyze = optional_tool("systemd-analyze")
    installed = Path(sys.executable).parent / "labgate"
    assert installed.is_file()
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/labgate/venv/bin/labgate", str(installed)))
    verified = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert (verified.returncode, verified.stderr) == (0, "")
