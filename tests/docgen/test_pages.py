"""The generated reference pages: committed exactly as the code renders them, covering everything they list."""

from __future__ import annotations

from pathlib import Path

import pytest

from proxy.cli import _parser
from proxy.docgen.__main__ import main as docgen
from proxy.docgen.pages import pages
from proxy.docgen.reason_notes import WHEN
from proxy.metrics import GatewayMetrics
from proxy.reasons import Reason

DOCS = Path(__file__).parent.parent.parent / "docs"
RENDERED = pages(_parser)


@pytest.mark.parametrize("page", sorted(RENDERED))
def test_the_committed_page_is_what_the_code_renders(page: str) -> None:
    committed = (DOCS / page).read_text()
    assert committed == RENDERED[page], f"docs/{page} is out of date: run .venv/bin/python -m proxy.docgen"


def test_every_reason_code_has_a_note_and_a_row() -> None:
    assert set(WHEN) == set(Reason)
    page = RENDERED["reference/reason-codes.md"]
    for reason in Reason:
        assert f"| `{reason.code}` | {reason.status} |" in page


def test_every_metric_family_is_listed() -> None:
    page = RENDERED["reference/metrics.md"]
    for family in GatewayMetrics().registry.collect():
        assert f"`{family.name}" in page


def test_every_command_is_listed_with_its_usage() -> None:
    page = RENDERED["reference/cli-commands.md"]
    for command in ("labgate serve", "labgate check", "labgate schema", "labgate token dev", "labgate token clients add", "labgate keys rotate"):
        assert f"## `{command}`" in page
    assert "| `--config CONFIG` (required) | config file (YAML); its packs are checked too |" in page
    assert "`--version`" in page


def test_every_config_section_is_listed() -> None:
    page = RENDERED["reference/config-keys.md"]
    for section in ("## listen", "## upstreams[]", "## upstreams[].token_source (type: jwt)", "## upstreams[].credential (type: oauth)", "## issuer.admin"):
        assert section + "\n" in page


def test_the_generator_checks_and_rewrites_a_stale_page(tmp_path: Path) -> None:
    (tmp_path / "reference").mkdir()
    assert docgen([str(tmp_path), "--check"]) == 1
    assert docgen([str(tmp_path)]) == 0
    assert docgen([str(tmp_path), "--check"]) == 0
    assert (tmp_path / "reference" / "metrics.md").read_text() == RENDERED["reference/metrics.md"]
