"""The tutorial "Front your own appliance", run exactly as written: every command, in one shell, in order.

The stand-in appliance (Python's file server) and labgate listen on the
loopback ports the page names; each command must print what the page shows.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.docs.markdown_steps import Command, WriteFile, steps_of
from tests.docs.shell import Shell

ROOT = Path(__file__).parent.parent.parent
TUTORIAL = ROOT / "docs" / "tutorial" / "front-your-own-appliance.md"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """A fresh folder whose .venv is the one running the tests: the page runs from the repository root."""
    (tmp_path / ".venv").symlink_to(Path(sys.executable).parent.parent)
    return tmp_path


def test_the_page_has_files_commands_and_shown_output() -> None:
    steps = steps_of(TUTORIAL)
    files = [s.path for s in steps if isinstance(s, WriteFile)]
    assert files == ["myapp/policies/acme.yaml", "myapp/policies/acme.tests.yaml", "myapp/acme.yaml"]
    commands = [s for s in steps if isinstance(s, Command)]
    assert any(c.line.startswith(".venv/bin/labgate serve") for c in commands)
    assert sum(1 for c in commands if c.shown) >= 10


def test_the_tutorial_runs_as_written(workdir: Path) -> None:
    shell = Shell(workdir)
    try:
        for step in steps_of(TUTORIAL):
            if isinstance(step, WriteFile):
                (workdir / step.path).write_text(step.text)
                continue
            status, output = shell.run(step.line)
            if step.shown:
                assert step.output_matches(output), f"{step.line}\nprinted:\n{output}\nthe page shows:\n" + "\n".join(step.shown)
            else:
                assert status == 0, f"{step.line} exited {status}; stderr: {(workdir / 'stderr.log').read_text()[-2000:]}"
    finally:
        shell.close()
    assert "development token (dev: true)" in (workdir / "stderr.log").read_text()


def test_shown_output_matches_line_by_line_with_an_ellipsis_for_anything() -> None:
    shown = Command("curl ...", ('{"reason": "missing_token", "request_id": "…"}', "200"))
    assert shown.output_matches('{"reason": "missing_token", "request_id": "a63731e0"}\n200\n')
    assert not shown.output_matches('{"reason": "revoked", "request_id": "a63731e0"}\n200')
    assert not shown.output_matches('{"reason": "missing_token", "request_id": "a63731e0"}')
