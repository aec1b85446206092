"""``labgate keys init|rotate|list``: the key ring, straight from the store, no server needed.

For bootstrap and break-glass: they read the config, open its store and
change or show the ring there; running labgates pick a change up within
``issuer.key_refresh_interval``.  Nothing here ever prints private material.

Exit codes: 0 done; 1 the store cannot be reached; 2 usage or config errors
(no ``issuer`` section included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import stat
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from proxy.config import Config, load_config
from proxy.gateway.runtime import open_state_store
from proxy.issuer.keys import is_encrypted
from proxy.issuer.ring import ensure_signing_key, rotate_signing_key
from proxy.issuer.settings import IssuerSettings
from proxy.store.base import SigningKeyRecord, Store, StoreUnavailable
from proxy.yamlsource import ConfigError

EXIT_OK, EXIT_STORE, EXIT_USAGE = 0, 1, 2


def add_commands(commands: Any) -> None:
    """Register ``keys`` and its subcommands on the CLI's subparsers."""
    keys = commands.add_parser("keys", help="labgate's token-signing keys (the issuer section)")
    actions = keys.add_subparsers(required=True, metavar="ACTION")
    init = actions.add_parser("init", help="make the first signing key, unless the ring has an active one")
    init.add_argument("--config", required=True, help="config file (YAML) naming the store")
    init.set_defaults(run=_init)
    rotate = actions.add_parser("rotate", help="make a new active key; the old one verifies until its tokens expire")
    rotate.add_argument("--config", required=True, help="config file (YAML) naming the store")
    rotate.add_argument(
        "--drop-old", action="store_true", help="the old keys stop verifying at once (a leaked key): their tokens die"
    )
    rotate.set_defaults(run=_rotate)
    listing = actions.add_parser("list", help="show the keys: kid, algorithm, state, times (never private material)")
    listing.add_argument("--config", required=True, help="config file (YAML) naming the store")
    listing.add_argument("--json", action="store_true", help="one JSON object per key instead of a table")
    listing.set_defaults(run=_list)


def issuer_config(path: str) -> tuple[Config, IssuerSettings] | None:
    try:
        config = load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None
    if config.issuer is None:
        print(f"{path}: has no 'issuer' section: labgate issues no tokens of its own", file=sys.stderr)
        return None
    return config, config.issuer


def with_store(config: Config, work: Callable[[Store], Awaitable[Any]]) -> Any:
    async def run() -> Any:
        store = open_state_store(config.store)
        try:
            return await work(store)
        finally:
            await store.close()

    return asyncio.run(run())


def _init(args: argparse.Namespace) -> int:
    loaded = issuer_config(args.config)
    if loaded is None:
        return EXIT_USAGE
    config, issuer = loaded

    async def work(store: Store) -> tuple[SigningKeyRecord | None, list[SigningKeyRecord]]:
        made = await ensure_signing_key(store, issuer, now=time.time())
        return made, await store.signing_keys(time.time())

    try:
        made, keys = with_store(config, work)
    except StoreUnavailable as exc:
        print(f"no key made: {exc}", file=sys.stderr)
        return EXIT_STORE
    if made is None:
        active = next((k for k in keys if k.active), None)
        print(f"the key ring already has an active key: {active.kid if active else '(none)'}")
    else:
        print(f"made the first signing key {made.kid} ({made.algorithm}) in the {config.store.kind} store")
    _warn_about_file_permissions(config)
    return EXIT_OK


def _rotate(args: argparse.Namespace) -> int:
    loaded = issuer_config(args.config)
    if loaded is None:
        return EXIT_USAGE
    config, issuer = loaded
    now = time.time()

    async def work(store: Store) -> tuple[list[SigningKeyRecord], SigningKeyRecord]:
        before = [k for k in await store.signing_keys(now) if k.active]
        return before, await rotate_signing_key(store, issuer, now=now, drop_old=args.drop_old)

    try:
        retired, made = with_store(config, work)
    except StoreUnavailable as exc:
        print(f"not rotated: {exc}", file=sys.stderr)
        return EXIT_STORE
    print(f"new active signing key {made.kid} ({made.algorithm}) in the {config.store.kind} store")
    for old in retired:
        if args.drop_old:
            print(f"dropped {old.kid}: every token it signed is refused within {2 * issuer.key_refresh_interval:g} s")
        else:
            print(f"retired {old.kid}: verifies tokens until {when(now + issuer.retired_key_grace)}")
    print(f"running labgates sign with the new key within {issuer.key_refresh_interval:g} s")
    _warn_about_file_permissions(config)
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    loaded = issuer_config(args.config)
    if loaded is None:
        return EXIT_USAGE
    config, _ = loaded
    try:
        keys: list[SigningKeyRecord] = with_store(config, lambda store: store.signing_keys(time.time()))
    except StoreUnavailable as exc:
        print(f"keys not read: {exc}", file=sys.stderr)
        return EXIT_STORE
    rows = [_row(key) for key in keys]
    if args.json:
        for row in rows:
            print(json.dumps(row))
    elif not rows:
        print("no signing keys yet: `labgate keys init` makes the first (or the first token issued does)")
    else:
        columns = ("kid", "algorithm", "state", "created", "retired", "verifies_until", "encrypted")
        widths = {c: max(len(c), *(len(str(r[c] or "-")) for r in rows)) for c in columns}
        print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
        for row in rows:
            print("  ".join(str(row[c] or "-").ljust(widths[c]) for c in columns).rstrip())
    return EXIT_OK


def _row(key: SigningKeyRecord) -> dict[str, Any]:
    """What an operator may see of a key: public facts only."""
    return {
        "kid": key.kid,
        "algorithm": key.algorithm,
        "state": "active" if key.active else "retired",
        "created": when(key.created_at),
        "retired": when(key.retired_at) if key.retired_at is not None else None,
        "verifies_until": when(key.usable_until) if key.usable_until is not None else None,
        "encrypted": "yes" if is_encrypted(key) else "no",
    }


def when(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _warn_about_file_permissions(config: Config) -> None:
    """Whoever can read the sqlite file can read the private keys in it."""
    path = config.store.path
    if config.store.kind != "sqlite" or path is None:
        return
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        print(
            f"warning: {path} is readable by other users, who could sign labgate tokens with its keys: chmod 600 {path}",
            file=sys.stderr,
        )
