"""``labgate token ...``: the token service's state, straight from the store, no server needed.

For bootstrap and break-glass, like ``labgate keys``: subjects and API clients
are made, listed and deleted in the config's store; running labgates see a
change on their next request.  Secrets are shown once, when made, and never
read from the command line (a password comes from stdin or a prompt).

Exit codes: 0 done; 1 the store cannot be reached; 2 usage or config errors.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any, TextIO

from proxy.issuer.secrets_hash import hash_secret

EXIT_OK, EXIT_STORE, EXIT_USAGE = 0, 1, 2


def add_token_commands(commands: Any) -> None:
    """Register ``token`` and its subcommands on the CLI's subparsers."""
    token = commands.add_parser("token", help="the token service: subjects, API clients, password hashes")
    actions = token.add_subparsers(required=True, metavar="ACTION")
    hashing = actions.add_parser(
        "hash-password", help="print a scrypt hash of a password read from stdin or a prompt (for the config)"
    )
    hashing.set_defaults(run=_hash_password)


def read_secret(prompt: str, stdin: TextIO | None = None) -> str | None:
    """A secret from a prompt (asked twice) at a terminal, else the first line of stdin; None when unusable.

    Never from argv: the command line is visible to every user of the machine
    and kept in shell history.
    """
    stream = stdin or sys.stdin
    if stream.isatty():
        first = getpass.getpass(f"{prompt}: ")
        if getpass.getpass(f"{prompt} (again): ") != first:
            print("the two entries differ", file=sys.stderr)
            return None
        secret = first
    else:
        secret = stream.readline().rstrip("\r\n")
    if not secret:
        print(f"{prompt.lower()}: nothing given", file=sys.stderr)
        return None
    return secret


def _hash_password(args: argparse.Namespace) -> int:
    password = read_secret("Password")
    if password is None:
        return EXIT_USAGE
    try:
        print(hash_secret(password))
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK
