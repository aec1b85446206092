"""Real redis-server and Sentinel processes the fault tests kill, freeze and restart.

Each node keeps its port and folder across restarts, so a restarted Redis is
the same server to labgate (and reloads its append-only file when it has one).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

from tests.conftest import free_port
from tests.redis_server import INSTALL_HINT, stop_process, wait_listening


def _binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(INSTALL_HINT)
    return binary


class RedisNode:
    """One redis-server on 127.0.0.1; ``durable`` writes every command to an append-only file first."""

    def __init__(self, folder: Path, *, durable: bool = False, replica_of: int | None = None) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if durable else ["--appendonly", "no"]
        self._args = [
            _binary(), "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(folder),
            "--protected-mode", "yes", *persistence,
        ]
        if replica_of is not None:
            self._args += ["--replicaof", "127.0.0.1", str(replica_of)]
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(self._args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_listening(self.port, self.process)

    def kill(self) -> None:
        """SIGKILL: no goodbye to its clients, their connections die with it."""
        if self.process is not None:
            self.process.kill()
            self.process.wait(timeout=10)
            self.process = None

    def freeze(self) -> None:
        """SIGSTOP: connections stay open and nothing answers."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.process is not None:
            self.thaw()
            stop_process(self.process)
            self.process = None


class SentinelNode:
    """``redis-server --sentinel`` watching ``primary`` as service ``name``; quick to declare it down."""

    def __init__(self, folder: Path, name: str, primary: RedisNode, *, down_after_ms: int = 1000) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.config = folder / "sentinel.conf"  # Sentinel rewrites its config: a file of its own
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {folder}\n"
            f"sentinel monitor {name} 127.0.0.1 {primary.port} 1\n"
            f"sentinel down-after-milliseconds {name} {down_after_ms}\n"
            f"sentinel failover-timeout {name} 10000\n"
            f"sentinel parallel-syncs {name} 1\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [_binary(), str(self.config), "--sentinel"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_listening(self.port, self.process)

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)
            self.process = None
