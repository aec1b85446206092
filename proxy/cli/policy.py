"""``labgate check``, ``explain``, ``test`` and ``schema``: the config and its policies, offline."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from proxy.cli.common import (
    CONFIG_HELP,
    EXIT_DENIED,
    EXIT_OK,
    EXIT_PROBLEMS,
    EXIT_USAGE,
    load,
)
from proxy.config import Config, Upstream
from proxy.gateway.ratelimit import explain_limits
from proxy.gateway.runtime import open_state_store
from proxy.ipaddrs import InvalidAddress, parse_ip
from proxy.policy.decide import Decision
from proxy.policy.offline import decide_offline
from proxy.policy.testing import MissingPath, load_suite, report, run_suite
from proxy.schemas import SCHEMAS, schema_text
from proxy.token_facts import TokenFacts, TokenRejection
from proxy.tokens.source import open_token_source
from proxy.wording import plural
from proxy.yamlsource import ConfigError


def add_commands(commands: Any) -> None:
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

    schema = commands.add_parser("schema", help="print the JSON Schema of the config file or of a policy pack (for editors)")
    schema.add_argument("name", choices=SCHEMAS, help="config: the config file; pack: a policy pack")
    schema.set_defaults(run=_schema)


def _schema(args: argparse.Namespace) -> int:
    sys.stdout.write(schema_text(args.name))
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    config = load(args.config)
    if config is None:
        return EXIT_PROBLEMS
    types = sum(len(p.token_types) for p in config.packs.values())
    counts = (plural(len(config.upstreams), "upstream"), plural(len(config.packs), "pack"), plural(types, "token type"))
    print(f"{args.config}: ok ({', '.join(counts)})")
    return EXIT_OK


def _explain(args: argparse.Namespace) -> int:
    config = load(args.config)
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
    store = open_state_store(config.store)
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
