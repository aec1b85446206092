"""``labgate serve`` under cProfile, switched on and off by signals: ``python -m bench.profiled_serve STATS -- ARGS``.

SIGUSR1 starts profiling, SIGUSR2 stops it and writes the stats to STATS, so
only the measured load is profiled (not the start, not the warm-up).  The
event loop runs in the main thread, where signal handlers run too, so the
profiler sees every request.  Used by :mod:`bench.profile`.
"""

from __future__ import annotations

import cProfile
import gc
import json
import signal
import sys
import time
from types import FrameType


def main() -> int:
    stats, separator, *args = sys.argv[1:]
    if separator != "--":
        raise SystemExit("usage: python -m bench.profiled_serve STATS -- serve --config FILE")
    profiler = cProfile.Profile()
    collections = {"seconds": [0.0, 0.0, 0.0], "count": [0, 0, 0], "collected": [0, 0, 0]}
    began = [0.0]

    def collecting(phase: str, info: dict[str, int]) -> None:
        """The garbage collector's own time, by generation: the profile counts it in whichever function allocated."""
        if phase == "start":
            began[0] = time.perf_counter()
            return
        generation = info["generation"]
        collections["seconds"][generation] += time.perf_counter() - began[0]
        collections["count"][generation] += 1
        collections["collected"][generation] += info["collected"]

    def start(signum: int, frame: FrameType | None) -> None:
        for value in collections.values():
            value[:] = [0, 0, 0]
        gc.callbacks.append(collecting)
        profiler.clear()  # each window on its own, not added to the ones before
        profiler.enable()

    def stop(signum: int, frame: FrameType | None) -> None:
        profiler.disable()
        gc.callbacks.remove(collecting)
        with open(f"{stats}.gc.json", "w", encoding="utf-8") as out:
            json.dump(collections, out)
        profiler.dump_stats(stats)

    signal.signal(signal.SIGUSR1, start)
    signal.signal(signal.SIGUSR2, stop)
    from proxy.cli import main as labgate

    sys.argv = ["labgate", *args]
    return int(labgate() or 0)


if __name__ == "__main__":
    sys.exit(main())
