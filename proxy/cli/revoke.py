"""``labgate revoke``: a revocation written to the store, which every replica enforces within a second."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import jwt

from proxy.cli.common import EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, load
from proxy.config import Config
from proxy.gateway.runtime import open_state_store
from proxy.store.base import RevocationKind, StoreUnavailable
from proxy.token_facts import short_token_hash, token_fingerprint


def add_commands(commands: Any) -> None:
    revoke = commands.add_parser("revoke", help="revoke a token, or every token of a subject or client, in the store")
    revoke.add_argument("--config", required=True, help="config file (YAML) naming the store to write to")
    what = revoke.add_mutually_exclusive_group(required=True)
    what.add_argument("--token", help="the token itself (only its sha256 is stored)")
    what.add_argument("--token-file", help="a file holding the token (keeps it out of shell history)")
    what.add_argument("--subject", help="every token of this subject issued until now")
    what.add_argument("--client", help="every token of this client id issued until now")
    revoke.set_defaults(run=_revoke)


def _revoke(args: argparse.Namespace) -> int:
    """Write a revocation to the configured store; every replica enforces it within a second."""
    config = load(args.config)
    if config is None:
        return EXIT_USAGE
    kind: RevocationKind
    if args.token is not None or args.token_file is not None:
        try:
            token = args.token if args.token is not None else Path(args.token_file).read_text().strip()
        except OSError as exc:
            print(f"cannot read {args.token_file!r}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
        kind, value, name = "token", token_fingerprint(token), f"token {short_token_hash(token)}"
        until = _expiry_of(token)
    elif args.subject is not None:
        kind, value, name, until = "subject", args.subject, f"subject {args.subject!r}", None
    else:
        kind, value, name, until = "client", args.client, f"client {args.client!r}", None
    try:
        asyncio.run(_write_revocation(config, kind, value, until))
    except StoreUnavailable as exc:
        print(f"revocation not written: {exc}", file=sys.stderr)
        return EXIT_PROBLEMS
    print(f"revoked {name} in the {config.store.kind} store")
    return EXIT_OK


def _expiry_of(token: str) -> float | None:
    """A JWT's own ``exp``, read without verifying: after it the revocation can be forgotten."""
    try:
        exp = jwt.decode(token, options={"verify_signature": False}).get("exp")
    except jwt.InvalidTokenError:
        return None
    return float(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None


async def _write_revocation(config: Config, kind: RevocationKind, value: str, until: float | None) -> None:
    """An opaque token labgate saw issued is also forgotten, its revocation kept until it would expire."""
    store = open_state_store(config.store)
    try:
        now = time.time()
        if kind == "token":
            record = await store.get_token(value, now)
            if record is not None and until is None:
                until = record.expires_at
        await store.revoke(kind, value, now, until)
        if kind == "token":
            await store.drop_token(value)
    finally:
        await store.close()
