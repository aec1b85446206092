"""One bash, fed one command at a time, as a reader types them at a terminal."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path

COMMAND_SECONDS = 60.0


class Shell:
    """One bash, fed one command at a time, so background jobs and variables carry over as at a terminal."""

    def __init__(self, cwd: Path) -> None:
        self.stderr = open(cwd / "stderr.log", "wb")
        self.process = subprocess.Popen(
            ["bash", "--noprofile", "--norc"], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=self.stderr, start_new_session=True,
        )
        self.count = 0

    def run(self, line: str) -> tuple[int, str]:
        self.count += 1
        marker = f"__step_{self.count}_done__"
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(f"{line}\necho; echo {marker} $?\n".encode())
        self.process.stdin.flush()
        output = b""
        deadline = time.monotonic() + COMMAND_SECONDS
        while marker.encode() not in output:
            left = deadline - time.monotonic()
            assert left > 0, f"{line!r} did not finish in {COMMAND_SECONDS:.0f} s; printed {output!r}"
            if select.select([self.process.stdout], [], [], left)[0]:
                chunk = os.read(self.process.stdout.fileno(), 65536)
                assert chunk, f"the shell ended during {line!r}"
                output += chunk
        text, _, status = output.decode().rpartition(marker)
        return int(status.split()[0]), text[:-1]  # the newline the marker's echo added

    def close(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGTERM)  # the shell and every job it started
        except ProcessLookupError:
            pass
        self.process.wait(timeout=10)
        for stream in (self.process.stdin, self.process.stdout, self.stderr):
            if stream is not None:
                stream.close()
