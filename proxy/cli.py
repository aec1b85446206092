"""The ``labgate`` command: serve, check, explain, test, revoke, schema, keys (:mod:`proxy.issuer.commands`),
token (:mod:`proxy.issuer.token_commands`).

Exit codes: 0 success / allowed; 1 config problems (check), a failed or
uncovered policy test (test) or a store that cannot take a revocation
(revoke); 2 usage or config errors elsewhere; 3 denied (explain).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Sequence

import jwt

from proxy.gateway.ratelimit import explain_limits
from proxy.config import Config, Upstream, load_config
from proxy.ipaddrs import InvalidAddress, parse_ip
from proxy.issuer.commands import add_keys_commands
from proxy.issuer.token_commands import add_token_commands
from proxy.policy.decide import Decision
from proxy.policy.offline import decide_offline
from proxy.policy.testing import MissingPath, load_suite, report, run_suite
from proxy.schemas import SCHEMAS, schema_text
from proxy.store.base import RevocationKind, StoreUnavailable
from proxy.store.open import open_store
from proxy.tokens.facts import TokenFacts, TokenRejection, short_token_hash, token_fingerprint
from proxy.tokens.source import open_token_source
from proxy.wording import plural
from proxy.yamlsource import ConfigError

EXIT_OK, EXIT_PROBLEMS, EXIT_USAGE, EXIT_DENIED = 0, 1, 2, 3
CONFIG_HELP = "config file (YAML)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labgate", description="Policy-enforcing reverse proxy for appliance APIs.")
    parser.add_argument("--version", action="version", version=f"labgate {_installed_version()}", help="print the version and exit")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the proxy")
    serve.add_argument("--config", required=True, help="config file (YAML)")
    serve.add_argument(
        "--log-level", default="info", choices=("debug", "info", "warning", "error"), help="how much to log to stderr (default: info)"
    )
    serve.add_argument("--workers", type=int, default=1, help="worker processes on the one port (needs a sqlite or redis store)")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # set by the supervisor for its workers
    serve.set_defaults(run=_serve)

    demo = commands.add_parser("demo", help="start the mock appliances and labgate in front of them, and show each family")
    demo.add_argument("--config", help="the lab config (default: deploy/examples/lab.yaml)")
    demo.add_argument("--check", action="store_true", help="walk through each family once and exit (0 when all behaved)")
    demo.set_defaults(run=_demo)

    check = commands.add_parser("check", help="validate a config and its policy packs")
    check.add_argument("--config", required=True, help="config file (YAML); its packs are checked too")
    check.set_defaults(run=_check)

    explain = commands.add_parser("explain", help="decide one request offline and say which rule decided")
    explain.add_argument("--config", required=True, help=CONFIG_HELP)
    explain.add_argument("--upstream", required=True, help="upstream name from the config")
    who = explain.add_mutually_exclusive_group(required=True)
    who.add_argument("--token-type", help="decide as a token of this type")
    who.add_argument("--token", help="a JWT to verify with the upstream's token source")
    explain.add_argument("--ip", help="client IP address (default: unknown)")
    explain.add_argument("method", help="HTTP method, e.g. GET")
    explain.add_argument("target", help="path and query as the appliance receives them, e.g. '/api/hosts?sort=name'")
    explain.set_defaults(run=_explain)

    test = commands.add_parser("test", help="run the policy test cases kept beside the packs")
    test.add_argument("paths", nargs="*", metavar="PATH", help="pack files, test files or folders (default: ./policies)")
    test.add_argument("--allow-uncovered", action="store_true", help="report rules that decide no case as warnings, not failures")
    test.set_defaults(run=_test)

    revoke = commands.add_parser("revoke", help="revoke a token, or every token of a subject or client, in the store")
    revoke.add_argument("--config", required=True, help="config file (YAML) naming the store to write to")
    what = revoke.add_mutually_exclusive_group(required=True)
    what.add_argument("--token", help="the token itself (only its sha256 is stored)")
    what.add_argument("--token-file", help="a file holding the token (keeps it out of shell history)")
    what.add_argument("--subject", help="every token of this subject issued until now")
    what.add_argument("--client", help="every token of this client id issued until now")
    revoke.set_defaults(run=_revoke)
    schema = commands.add_parser("schema", help="print the JSON Schema of the config file or of a policy pack (for editors)")
    schema.add_argument("name", choices=SCHEMAS, help="config: the config file; pack: a policy pack")
    schema.set_defaults(run=_schema)
    add_keys_commands(commands)
    add_token_commands(commands)
    return parser


def _installed_version() -> str:
    """The version pip installed (pyproject.toml's), so it never disagrees with the package metadata."""
    try:
        return version("labgate")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "unknown (not installed)"


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return None


def _schema(args: argparse.Namespace) -> int:
    sys.stdout.write(schema_text(args.name))
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_PROBLEMS
    types = sum(len(p.token_types) for p in config.packs.values())
    counts = (plural(len(config.upstreams), "upstream"), plural(len(config.packs), "pack"), plural(types, "token type"))
    print(f"{args.config}: ok ({', '.join(counts)})")
    return EXIT_OK


def _explain(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    upstream = config.upstream(args.upstream)
    if upstream is None:
        print(f"unknown upstream {args.upstream!r} (known: {', '.join(u.name for u in config.upstreams)})", file=sys.stderr)
        return EXIT_USAGE
    pack = config.packs[upstream.pack]
    client_ip = None
    if args.ip is not None:
        try:
            client_ip = parse_ip(args.ip)
        except InvalidAddress as exc:
            print(f"--ip: {exc}", file=sys.stderr)
            return EXIT_USAGE
    token: TokenFacts | TokenRejection
    if args.token_type is not None:
        if args.token_type not in pack.token_types:
            print(f"unknown token type {args.token_type!r} in pack {pack.name!r} (known: {', '.join(pack.token_types)})", file=sys.stderr)
            return EXIT_USAGE
        token = TokenFacts(token_type=args.token_type, token_hash="explain")
    else:
        token = asyncio.run(_verify(config, upstream, args.token))
    decision = _explain_decision(args.method, args.target, client_ip, token, pack, config)
    explanation = decision.as_explanation()
    if decision.allowed:
        compiled = pack.token_types.get(decision.token_type or "")
        explanation.update(explain_limits(upstream, compiled.spec.rate_limit if compiled else None, decision.token_type))
    print(json.dumps(explanation))
    if decision.shadow:
        print(
            f"shadow mode: forwarded, but {decision.token_type} would be denied with "
            f"{decision.reason.status} {decision.reason.code}: {decision.detail}",
            file=sys.stderr,
        )
    elif decision.detail:
        print(decision.detail, file=sys.stderr)
    return EXIT_OK if decision.allowed else EXIT_DENIED


async def _verify(config: Config, upstream: Upstream, token: str) -> TokenFacts | TokenRejection:
    """The token as the upstream's source sees it (an observed token is looked up in the store)."""
    store = open_store(config.store)
    source = open_token_source(upstream.token_source, store, upstream=upstream.name)
    try:
        return await source.verify(token)
    finally:
        await source.close()
        await store.close()


def _explain_decision(method: str, target_text: str, client_ip, token, pack, config: Config) -> Decision:  # type: ignore[no-untyped-def]
    """The same steps as the gateway, minus the network."""
    return decide_offline(method, target_text, client_ip, token, pack, max_query_params=config.limits.max_query_params)


def _test(args: argparse.Namespace) -> int:
    """Policy test cases: 0 all pass and cover every rule, 1 a mismatch or an uncovered rule, 2 usage or load errors."""
    paths = [Path(p) for p in args.paths] or [Path("policies")]
    try:
        suite = load_suite(paths)
    except MissingPath as exc:
        print(f"labgate test: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    if not suite:
        print(f"labgate test: no policy packs in {', '.join(map(str, paths))}", file=sys.stderr)
        return EXIT_USAGE
    lines, passed = report(run_suite(suite), allow_uncovered=args.allow_uncovered)
    print("\n".join(lines))
    return EXIT_OK if passed else EXIT_PROBLEMS


def _revoke(args: argparse.Namespace) -> int:
    """Write a revocation to the configured store; every replica enforces it within a second."""
    config = _load(args.config)
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
    store = open_store(config.store)
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


def _demo(args: argparse.Namespace) -> int:
    """Mock appliances plus labgate on the lab config; see :mod:`proxy.demo`."""
    logging.basicConfig(level="WARNING", format="%(message)s", stream=sys.stderr)
    from proxy.demo import LAB_CONFIG, run_demo

    config = _load(args.config or str(LAB_CONFIG))
    if config is None:
        return EXIT_USAGE
    try:
        return asyncio.run(run_demo(config, check=args.check))
    except OSError as exc:
        print(f"cannot start the lab: {exc.strerror or exc} (is another demo or labgate running?)", file=sys.stderr)
        return EXIT_USAGE


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(message)s", stream=sys.stderr)
    config = _load(args.config)
    if config is None:
        return EXIT_USAGE
    from proxy.gateway.server import c_parser_active, run_server

    if not c_parser_active():
        print(
            "refusing to start: aiohttp's C HTTP parser is not active (AIOHTTP_NO_EXTENSIONS set, or the "
            "extension is missing); the pure-Python parser accepts requests the C parser rejects",
            file=sys.stderr,
        )
        return EXIT_USAGE
    if args.workers != 1:
        return _serve_workers(args, config)
    # Config, packs and imports live as long as the process: keep them out of
    # every garbage collection from here on (1,000-route packs are many objects).
    gc.collect()
    gc.freeze()
    try:
        asyncio.run(run_server(config, reuse_port=args.reuse_port))
    except OSError as exc:
        print(f"cannot listen on {config.listen.address}:{config.listen.port}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


def _serve_workers(args: argparse.Namespace, config: Config) -> int:
    """A supervisor with ``--workers`` processes; each is a plain ``serve`` sharing the port."""
    from proxy.workers import WorkersRefused, check_workers_allowed, serve_workers

    try:
        check_workers_allowed(config, args.workers)
        return serve_workers(Path(args.config), config, args.workers, args.log_level)
    except WorkersRefused as exc:
        print(f"refusing to start: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"cannot listen on {config.listen.address}:{config.listen.port}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
