"""``labgate token ...``: the token service's state, straight from the store, no server needed.

For bootstrap and break-glass, like ``labgate keys``: subjects and API clients
are made, listed and deleted in the config's store (running labgates see a
change on their next request, other replicas within half a second), and
``token issue`` mints an access token with the ring's active key when nothing
else works.  Secrets and tokens are printed once, when made; a password is
never read from the command line (it comes from stdin or a prompt).

Exit codes: 0 done; 1 the store cannot be reached (or the keys cannot be
used); 2 usage or config errors, an unknown or existing name.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from proxy.cli.keys import issuer_config, when, with_store
from proxy.config import Config, load_config
from proxy.gateway.token_service.audiences import NoSuchAudience, select_upstream
from proxy.issuer import directory
from proxy.issuer.access_tokens import AccessTokenGrant, mint_access_token
from proxy.issuer.grants import token_terms
from proxy.issuer.keys import SigningKeyUnusable
from proxy.issuer.records import NAME
from proxy.issuer.ring import KeyRing
from proxy.issuer.secrets_hash import hash_secret
from proxy.store.base import Store, StoreUnavailable
from proxy.tokens.dev_token import (
    DEV_CLAIM,
    DevTokenRefused,
    DevTokenRequest,
    mint_dev_token,
    parse_claim,
)
from proxy.verification_keys import KeysUnavailable
from proxy.yamlsource import ConfigError, parse_duration

EXIT_OK, EXIT_STORE, EXIT_USAGE = 0, 1, 2
BREAK_GLASS_CLIENT = "labgate-cli"  # the client_id claim of a token `labgate token issue` mints


def add_commands(commands: Any) -> None:
    """Register ``token`` and its subcommands on the CLI's subparsers."""
    token = commands.add_parser("token", help="the token service: subjects, API clients, break-glass tokens, password hashes")
    actions = token.add_subparsers(required=True, metavar="ACTION")
    hashing = actions.add_parser(
        "hash-password", help="print a scrypt hash of a password read from stdin or a prompt (for the config)"
    )
    hashing.set_defaults(run=_hash_password)
    _add_subject_commands(actions)
    _add_client_commands(actions)
    issue = actions.add_parser("issue", help="break-glass: mint an access token with the active key and print it once")
    issue.add_argument("--config", required=True, help="config file (YAML) with an issuer section")
    issue.add_argument("--upstream", required=True, help="an upstream whose token_source is issuer (name or audience)")
    issue.add_argument("--subject", required=True, help="whom the token is for (its sub)")
    issue.add_argument("--token-type", required=True, help="a token type that upstream accepts")
    issue.add_argument("--lifetime", help="e.g. 30m (default: the type's ttl, or 1h; at most access_token_max_lifetime)")
    issue.set_defaults(run=_issue)
    _add_dev_command(actions)


def _add_dev_command(actions: Any) -> None:
    dev = actions.add_parser(
        "dev", help="development only: sign a token that a jwt source with a shared secret (HS256) accepts, and print it"
    )
    dev.add_argument("--config", required=True, help="config file (YAML)")
    dev.add_argument("--upstream", required=True, help="the upstream whose token_source must accept the token")
    dev.add_argument("--token-type", required=True, help="the token type the token is to be (a types rule of that source)")
    dev.add_argument("--subject", default="dev", help="whom the token is for (default: dev)")
    dev.add_argument("--lifetime", default="1h", help="how long it lives, e.g. 30m (default: 1h, at most 24h)")
    dev.add_argument(
        "--claim", action="append", default=[], metavar="NAME=VALUE",
        help="an extra claim, VALUE as JSON when it parses (e.g. --claim 'path_prefixes=[\"/Client\"]'); repeatable",
    )
    dev.set_defaults(run=_dev)


def _add_subject_commands(actions: Any) -> None:
    subjects = actions.add_parser("subjects", help="subjects: whom tokens are issued for")
    verbs = subjects.add_subparsers(required=True, metavar="VERB")
    add = verbs.add_parser("add", help="add a subject")
    add.add_argument("name", help="the subject's name: what its tokens carry as sub")
    add.add_argument("--password", action="store_true", help="give it a password (read from stdin or a prompt)")
    listing = verbs.add_parser("list", help="list subjects (never a password or its hash)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    delete = verbs.add_parser("delete", help="delete a subject, its API clients and every token of either")
    delete.add_argument("name", help="the subject to delete")
    for verb, run in ((add, _subjects_add), (listing, _subjects_list), (delete, _subjects_delete)):
        verb.add_argument("--config", required=True, help="config file (YAML) naming the store")
        verb.set_defaults(run=run)


def _add_client_commands(actions: Any) -> None:
    clients = actions.add_parser("clients", help="API clients: client_credentials logins for a subject")
    verbs = clients.add_subparsers(required=True, metavar="VERB")
    add = verbs.add_parser("add", help="add an API client; its secret is printed once")
    add.add_argument("--name", required=True, help="a name for people to recognise the client by")
    add.add_argument("--subject", required=True, help="the subject its tokens are issued for")
    add.add_argument("--audience", help="limit it to one upstream (its name or audience)")
    listing = verbs.add_parser("list", help="list API clients (never a secret)")
    listing.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    reset = verbs.add_parser("reset-secret", help="a new secret, printed once; every token of the client dies")
    reset.add_argument("client_id", help="the client whose secret to replace")
    delete = verbs.add_parser("delete", help="delete an API client; every token of it dies")
    delete.add_argument("client_id", help="the client to delete")
    for verb, run in ((add, _clients_add), (listing, _clients_list), (reset, _clients_reset), (delete, _clients_delete)):
        verb.add_argument("--config", required=True, help="config file (YAML) naming the store")
        verb.set_defaults(run=run)


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


def _run(args: argparse.Namespace, work: Callable[[Config, Store], Awaitable[Any]], failed: str) -> tuple[int, Any]:
    """Load the config, run ``work`` on its store; an exit code and what ``work`` returned."""
    loaded = issuer_config(args.config)
    if loaded is None:
        return EXIT_USAGE, None
    config, _ = loaded
    try:
        return EXIT_OK, with_store(config, lambda store: work(config, store))
    except directory.DirectoryError as exc:
        print(f"{failed}: {exc}", file=sys.stderr)
        return EXIT_USAGE, None
    except (StoreUnavailable, KeysUnavailable, SigningKeyUnusable) as exc:
        print(f"{failed}: {exc}", file=sys.stderr)
        return EXIT_STORE, None


# -- subjects ----------------------------------------------------------------------


def _subjects_add(args: argparse.Namespace) -> int:
    password = read_secret("Password") if args.password else None
    if args.password and password is None:
        return EXIT_USAGE
    code, record = _run(args, lambda _, store: directory.add_subject(store, args.name, password, now=time.time()), "not added")
    if code == EXIT_OK:
        print(f"added subject {record.name}" + (" with a password" if password else " (no password: no password grant)"))
    return code


def _subjects_list(args: argparse.Namespace) -> int:
    code, records = _run(args, lambda _, store: directory.list_subjects(store, now=time.time()), "not listed")
    if code == EXIT_OK:
        _print_rows([{**directory.subject_view(r), "created_at": when(r.created_at)} for r in records], args.json, "no subjects yet")
    return code


def _subjects_delete(args: argparse.Namespace) -> int:
    async def work(_: Config, store: Store) -> list[str]:
        now = time.time()
        deleted = await directory.delete_subject(store, store.revoke, args.name, now=now)
        await directory.revocation_settled(now, time.time)
        return deleted

    code, clients = _run(args, work, "not deleted")
    if code == EXIT_OK:
        print(f"deleted subject {args.name} and {len(clients)} API client(s); every token of theirs is refused from now on")
    return code


# -- API clients -------------------------------------------------------------------


def _clients_add(args: argparse.Namespace) -> int:
    async def work(config: Config, store: Store) -> tuple[Any, str]:
        if args.audience is not None:
            try:
                select_upstream(config, args.audience)
            except NoSuchAudience as exc:
                raise directory.DirectoryError("invalid", f"audience: {exc}") from None
        return await directory.add_client(store, args.name, args.subject, args.audience, now=time.time())

    code, made = _run(args, work, "not added")
    if code == EXIT_OK:
        record, secret = made
        print(f"client_id: {record.client_id}\nclient_secret: {secret}")
        print("the secret is shown this once: only its hash is kept", file=sys.stderr)
    return code


def _clients_list(args: argparse.Namespace) -> int:
    code, records = _run(args, lambda _, store: directory.list_clients(store, now=time.time()), "not listed")
    if code == EXIT_OK:
        rows = [{**directory.client_view(r), "created_at": when(r.created_at)} for r in records]
        _print_rows(rows, args.json, "no API clients yet")
    return code


def _clients_reset(args: argparse.Namespace) -> int:
    async def work(_: Config, store: Store) -> tuple[Any, str]:
        now = time.time()
        made = await directory.reset_client_secret(store, store.revoke, args.client_id, now=now)
        await directory.revocation_settled(now, time.time)
        return made

    code, made = _run(args, work, "not reset")
    if code == EXIT_OK:
        record, secret = made
        print(f"client_id: {record.client_id}\nclient_secret: {secret}")
        print("every token of this client is refused from now on; the new secret is shown this once", file=sys.stderr)
    return code


def _clients_delete(args: argparse.Namespace) -> int:
    async def work(_: Config, store: Store) -> None:
        now = time.time()
        await directory.delete_client(store, store.revoke, args.client_id, now=now)
        await directory.revocation_settled(now, time.time)

    code, _ = _run(args, work, "not deleted")
    if code == EXIT_OK:
        print(f"deleted API client {args.client_id}; every token of it is refused from now on")
    return code


# -- break-glass -------------------------------------------------------------------


def _issue(args: argparse.Namespace) -> int:
    async def work(config: Config, store: Store) -> Any:
        grant = _break_glass_grant(config, args)
        assert config.issuer is not None
        ring = KeyRing(store, config.issuer)
        try:
            return mint_access_token(await ring.signing_key(), config.issuer, grant, now=time.time())
        except ValueError as exc:  # what labgate would not sign, e.g. longer than access_token_max_lifetime
            raise directory.DirectoryError("invalid", str(exc)) from None
        finally:
            await ring.close()

    code, minted = _run(args, work, "no token issued")
    if code == EXIT_OK:
        print(minted.token)
        print(f"token {minted.jti} for {args.subject} ({args.token_type}) expires {when(minted.expires_at)}", file=sys.stderr)
    return code


def _break_glass_grant(config: Config, args: argparse.Namespace) -> AccessTokenGrant:
    assert config.issuer is not None
    try:
        upstream, source = select_upstream(config, args.upstream)
    except NoSuchAudience as exc:
        raise directory.DirectoryError("invalid", f"--upstream: {exc}") from None
    if args.token_type not in source.token_types:
        raise directory.DirectoryError("invalid", f"upstream {upstream.name!r} takes no token type {args.token_type!r}")
    if not NAME.fullmatch(args.subject):
        raise directory.DirectoryError("invalid", "--subject is 1-128 letters, digits and . _ @ + -")
    lifetime = token_terms(config.packs[upstream.pack].token_types[args.token_type].spec.lifetimes, config.issuer).lifetime
    if args.lifetime is not None:
        try:
            lifetime = parse_duration(args.lifetime)
        except ValueError as exc:
            raise directory.DirectoryError("invalid", f"--lifetime: {exc}") from None
    return AccessTokenGrant(args.subject, BREAK_GLASS_CLIENT, args.token_type, source.audience[0], lifetime, (args.token_type,))


def _dev(args: argparse.Namespace) -> int:
    """Print a development token; the warning goes to stderr so ``TOKEN=$(...)`` keeps only the token."""
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print("\n".join(map(str, exc.problems)), file=sys.stderr)
        return EXIT_USAGE
    upstream = config.upstream(args.upstream)
    try:
        if upstream is None:
            raise DevTokenRefused(f"unknown upstream {args.upstream!r} (known: {', '.join(u.name for u in config.upstreams)})")
        request = DevTokenRequest(args.token_type, args.subject, _dev_lifetime(args.lifetime), dict(map(parse_claim, args.claim)))
        token = asyncio.run(mint_dev_token(upstream.token_source, upstream.name, request))
    except DevTokenRefused as exc:
        print(f"no token made: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(token)
    print(
        f"development token ({DEV_CLAIM}: true) for {args.subject} as {args.token_type!r} on upstream {upstream.name!r}, "
        f"expires {when(time.time() + request.lifetime)}: signed with the config's shared secret, never for production",
        file=sys.stderr,
    )
    return EXIT_OK


def _dev_lifetime(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise DevTokenRefused(f"--lifetime: {exc}") from None


def _print_rows(rows: list[dict[str, Any]], as_json: bool, empty: str) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    if not rows:
        print(empty)
        return
    columns = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c] if r[c] is not None else "-")) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for row in rows:
        print("  ".join(str(row[c] if row[c] is not None else "-").ljust(widths[c]) for c in columns).rstrip())
