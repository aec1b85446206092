"""``labgate serve --workers N``: N worker processes serving one port.

Python runs one request at a time per process; several processes use several
cores.  Each worker is a full ``labgate serve`` listening with SO_REUSEPORT,
so the kernel spreads connections over them.  They share nothing in memory:
token state (revocations, last uses, observed tokens) lives in the store, which
is why a ``memory`` store is refused, and metrics meet in a directory that
every worker's ``/metrics`` aggregates (prometheus_client's multiprocess mode).

The supervisor (this module) binds nothing itself after a first check that the
port is free.  It forwards SIGHUP (reload) and SIGTERM/SIGINT (drain, then
stop) to its workers, and starts a new worker when one dies, unless workers
keep dying at start, which means the config or the port is wrong.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from proxy.config import Config
from proxy.errors import LabgateError
from proxy.metrics import mark_worker_dead
from proxy.reasons import Reason

logger = logging.getLogger("labgate")

# A worker that exits sooner than this after its start counts as failing to start.
START_GRACE_SECONDS = 5.0
# This many failed starts in a row stop the supervisor instead of looping.
MAX_FAILED_STARTS = 3
POLL_SECONDS = 0.2
# Beyond the drain deadline, how long workers get to close pools and the store.
STOP_MARGIN_SECONDS = 10.0


class WorkersRefused(LabgateError):
    """The config cannot be served by several workers; the message says why."""

    reason = Reason.CONFIG_PROBLEM


def check_workers_allowed(config: Config, workers: int) -> None:
    if workers < 1:
        raise WorkersRefused("--workers must be at least 1")
    if workers > 1 and config.store.kind == "memory":
        raise WorkersRefused(
            "--workers needs a shared store: each worker would keep its own memory store, so a revocation or "
            "a token's last use seen by one worker would be unknown to the others; use store type sqlite or redis"
        )


def check_port_free(config: Config) -> None:
    """Fail early and clearly when something else already listens there (workers would only die one by one)."""
    family = socket.AF_INET6 if ":" in config.listen.address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((config.listen.address, config.listen.port))


@dataclass
class Worker:
    process: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)


class Supervisor:
    """Starts, watches, signals and restarts the workers."""

    def __init__(self, config_file: Path, config: Config, workers: int, log_level: str) -> None:
        self._config_file = config_file
        self._count = workers
        self._log_level = log_level
        self._drain = config.shutdown.drain_seconds
        self._metrics_dir = tempfile.mkdtemp(prefix="labgate-metrics-")
        self._workers: list[Worker] = []
        self._failed_starts = 0
        self._stopping = False
        self._reload_pending = False

    def _spawn(self) -> Worker:
        env = dict(os.environ, PROMETHEUS_MULTIPROC_DIR=self._metrics_dir)
        command = [
            sys.executable, "-m", "proxy.cli", "serve", "--config", str(self._config_file),
            "--log-level", self._log_level, "--reuse-port",
        ]
        return Worker(subprocess.Popen(command, env=env))

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT; 0 after a clean stop, 1 when workers cannot start."""
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_reload)
        try:
            self._workers = [self._spawn() for _ in range(self._count)]
            logger.info("labgate supervisor %d started %d workers", os.getpid(), self._count)
            while not self._stopping:
                if self._reload_pending:
                    self._reload_pending = False
                    self._signal_all(signal.SIGHUP)
                if not self._replace_exited():
                    self._stop_all()
                    return 1
                time.sleep(POLL_SECONDS)
            self._stop_all()
            return 0
        finally:
            shutil.rmtree(self._metrics_dir, ignore_errors=True)

    def _on_stop(self, signum: int, frame: FrameType | None) -> None:
        self._stopping = True

    def _on_reload(self, signum: int, frame: FrameType | None) -> None:
        self._reload_pending = True

    def _replace_exited(self) -> bool:
        """Start a new worker for each one that died; False when they keep dying at start."""
        for index, worker in enumerate(self._workers):
            code = worker.process.poll()
            if code is None:
                continue
            mark_worker_dead(worker.process.pid, self._metrics_dir)
            lived = time.monotonic() - worker.started
            if lived < START_GRACE_SECONDS:
                self._failed_starts += 1
            else:
                self._failed_starts = 0
            if self._failed_starts >= MAX_FAILED_STARTS:
                logger.error("workers keep exiting at start (last exit code %s); stopping", code)
                return False
            logger.warning("worker %d exited with code %s after %.0fs; starting another", worker.process.pid, code, lived)
            self._workers[index] = self._spawn()
        return True

    def _signal_all(self, signum: int) -> None:
        for worker in self._workers:
            if worker.process.poll() is None:
                worker.process.send_signal(signum)

    def _stop_all(self) -> None:
        """SIGTERM: each worker drains its requests in flight; those that overstay are killed."""
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self._drain + STOP_MARGIN_SECONDS
        for worker in self._workers:
            try:
                worker.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                logger.warning("worker %d did not stop in time; killing it", worker.process.pid)
                worker.process.kill()
                worker.process.wait()
            mark_worker_dead(worker.process.pid, self._metrics_dir)
        logger.info("labgate supervisor stopped")


def serve_workers(config_file: Path, config: Config, workers: int, log_level: str) -> int:
    check_port_free(config)
    return Supervisor(config_file, config, workers, log_level).run()
