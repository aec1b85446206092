"""The tutorial "Front your own appliance", run exactly as written: every command, in one shell, in order.

The stand-in appliance (Python's file server) and labgate listen on the
loopback ports the page names; each command must print what the page shows.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.docs.markdown_steps import Command, WriteFile, steps_of

ROOT = Path(__file__).parent.parent.parent
TUTORIAL = ROOT / "docs" / "tutorial" / "front-your-own-appliance.md"
COMMAND_SECONDS = 60.0


class Shell:
    """One bash, fed one command at a time, so background jobs and variables carry over as at a terminal."""

    def __init__(self, cwd: Path) -> None:
        self.stderr = open(cwd / "stderr.log", "wb")
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.stderr, start_new_session=True,
        )
        self.count = 0

    def run(self, line: str) -> tuple[int, str]:
        self.count += 1
        marker = f"__step_{self.count}_done__"
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{line}\necho; echo {marker} $?\n".encode())
        self.process.stdin.flush()
        output = b""
        deadline = time.monotonic() + COMMAND_SECONDS
        while marker.encode() not in output:
            left = deadline - time.monotonic()
            assert left > 0, f"{line!r} did not finish in {COMMAND_SECONDS:.0f} s; printed {output!r}"
            if select.select([self.process.stdout], [], [], left)[0]:
                chunk = os.read(self.process.stdout.fileno(), 65536)
                assert chunk, f"the shell ended during {line!r}"
                output += chunk
        text, _, status = output.decode().rpartition(marker)
        return int(status.split()[0]), text[:-1]  # the newline the marker's echo added

    def close(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)  # the shell and every job it started
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout, self.stderr):
            if stream is not None:
                stream.close()


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
