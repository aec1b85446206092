"""The README and the Quick start page: every command runs as written after the Quick start.

The two Quick-start commands themselves (the lab that serves until Ctrl-C, and
the whole CI run) and ``labgate demo --check`` (which takes the lab's fixed
ports; tests/test_demo.py walks the demo) are the only ones not run here.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.docs.markdown_steps import Command, steps_of
from tests.docs.shell import Shell

ROOT = Path(__file__).parent.parent.parent
PAGES = [ROOT / "README.md", ROOT / "docs" / "tutorial" / "quickstart.md"]
NOT_RUN_HERE = {"bash deploy/quickstart.sh", "bash .ci/run", ".venv/bin/labgate demo --check"}


def commands() -> list[tuple[str, Command]]:
    return [(page.name, step) for page in PAGES for step in steps_of(page) if isinstance(step, Command)]


@pytest.fixture(scope="module")
def checkout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repository as the Quick start leaves it: its files and labgate installed in .venv."""
    folder = tmp_path_factory.mktemp("checkout")
    (folder / ".venv").symlink_to(Path(sys.executable).parent.parent)
    for name in ("deploy", "policies"):
        (folder / name).symlink_to(ROOT / name)
    return folder


def test_the_readme_names_both_quick_start_commands_and_links_the_manual() -> None:
    readme = (ROOT / "README.md").read_text()
    run = [step.line for _, step in commands() if _ == "README.md"]
    assert run[:2] == ["bash deploy/quickstart.sh", "bash .ci/run"]
    assert len(readme.splitlines()) <= 250
    for link in ("docs/tutorial/quickstart.md", "docs/tutorial/front-your-own-appliance.md", "docs/reference/cli.md"):
        assert f"]({link})" in readme


def test_no_command_is_written_as_a_bare_labgate() -> None:
    bare = [step.line for _, step in commands() if step.line.startswith("labgate ") or " labgate " in step.line.split("|")[0][:20]]
    assert bare == []


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_each_command_runs_as_written(checkout: Path, page: Path) -> None:
    shell = Shell(checkout)
    try:
        for step in steps_of(page):
            if not isinstance(step, Command) or step.line in NOT_RUN_HERE:
                continue
            status, output = shell.run(step.line)
            if step.shown:
                assert step.output_matches(output), f"{page.name}: {step.line}\nprinted: {output}"
            else:
                assert status == 0, f"{page.name}: {step.line} exited {status}"
    finally:
        shell.close()
