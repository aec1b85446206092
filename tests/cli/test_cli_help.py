"""Every labgate subcommand and option explains itself in --help, and --version answers."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from importlib.metadata import version

import pytest

from proxy.cli import _parser, main


def walk(parser: argparse.ArgumentParser, path: str = "labgate") -> Iterator[tuple[str, argparse.Action, argparse.ArgumentParser]]:
    """Every action of every parser, subcommands included, with the command path that reaches it."""
    for action in parser._actions:
        yield path, action, parser
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, f"{path} {name}")


def subcommand_helps(parser: argparse.ArgumentParser) -> dict[str, str | None]:
    helps: dict[str, str | None] = {}
    for path, action, _ in walk(parser):
        if isinstance(action, argparse._SubParsersAction):
            for choice in action._choices_actions:
                helps[f"{path} {choice.dest}"] = choice.help
    return helps


def test_every_subcommand_has_help() -> None:
    helps = subcommand_helps(_parser())
    assert len(helps) > 10  # the walk reached the nested token and keys commands
    missing = sorted(name for name, text in helps.items() if not text)
    assert missing == []


def test_every_option_and_argument_has_help() -> None:
    missing = []
    for path, action, _ in walk(_parser()):
        if isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue
        if action.help == argparse.SUPPRESS:
            continue  # internal, e.g. the supervisor's --reuse-port
        if not action.help:
            missing.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    assert missing == []


def test_version_prints_the_installed_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])
    assert exited.value.code == 0
    assert capsys.readouterr().out.strip() == f"labgate {version('labgate')}"
