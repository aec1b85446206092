"""``labgate serve`` and ``labgate demo``: running the proxy, alone or in front of the mock appliances."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import sys
from pathlib import Path
from typing import Any

from proxy import event_loop
from proxy.cli.common import EXIT_OK, EXIT_USAGE, load
from proxy.config import Config


def add_commands(commands: Any) -> None:
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



def _demo(args: argparse.Namespace) -> int:
    """Mock appliances plus labgate on the lab config; see :mod:`proxy.demo`."""
    logging.basicConfig(level="WARNING", format="%(message)s", stream=sys.stderr)
    from proxy.demo import LAB_CONFIG, run_demo

    config = load(args.config or str(LAB_CONFIG))
    if config is None:
        return EXIT_USAGE
    try:
        return asyncio.run(run_demo(config, check=args.check))
    except OSError as exc:
        print(f"cannot start the lab: {exc.strerror or exc} (is another demo or labgate running?)", file=sys.stderr)
        return EXIT_USAGE


def _serve(args: argparse.Namespace) -> int:
    logging.basicConfig(level=args.log_level.upper(), format="%(message)s", stream=sys.stderr)
    config = load(args.config)
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
        event_loop.run(run_server(config, reuse_port=args.reuse_port))
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
