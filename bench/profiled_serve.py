"""``labgate serve`` under cProfile, switched on and off by signals: ``python -m bench.profiled_serve STATS -- ARGS``.

SIGUSR1 starts profiling, SIGUSR2 stops it and writes the stats to STATS, so
only the measured load is profiled (not the start, not the warm-up).  The
event loop runs in the main thread, where signal handlers run too, so the
profiler sees every request.  Used by :mod:`bench.profile`.
"""

from __future__ import annotations

import cProfile
import signal
import sys
from types import FrameType


def main() -> int:
    stats, separator, *args = sys.argv[1:]
    if separator != "--":
        raise SystemExit("usage: python -m bench.profiled_serve STATS -- serve --config FILE")
    profiler = cProfile.Profile()

    def start(signum: int, frame: FrameType | None) -> None:
        profiler.enable()

    def stop(signum: int, frame: FrameType | None) -> None:
        profiler.disable()
        profiler.dump_stats(stats)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    from proxy.cli import main as labgate

    sys.argv = ["labgate", *args]
    return int(labgate() or 0)


if __name__ == "__main__":
    sys.exit(main())
