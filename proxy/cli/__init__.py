"""The ``labgate`` command, one module per command group.

serve, demo (:mod:`proxy.cli.serving`); check, explain, test, schema
(:mod:`proxy.cli.policy`); revoke (:mod:`proxy.cli.revoke`); keys
(:mod:`proxy.cli.keys`); token (:mod:`proxy.cli.tokens`).

Exit codes: 0 success / allowed; 1 config problems (check), a failed or
uncovered policy test (test) or a store that cannot take a revocation
(revoke); 2 usage or config errors elsewhere; 3 denied (explain).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from proxy.cli import keys, policy, revoke, serving, tokens
from proxy.cli.common import EXIT_DENIED, EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE

__all__ = ["main", "EXIT_OK", "EXIT_PROBLEMS", "EXIT_USAGE", "EXIT_DENIED"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labgate", description="Policy-enforcing reverse proxy for appliance APIs.")
    parser.add_argument("--version", action="version", version=f"labgate {_installed_version()}", help="print the version and exit")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")
    for group in (serving, policy, revoke, keys, tokens):
        group.add_commands(commands)
    return parser


def _installed_version() -> str:
    """The version pip installed (pyproject.toml's), so it never disagrees with the package metadata."""
    try:
        return version("labgate")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"
