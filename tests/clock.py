"""Time that moves only when a test says so, for the clocks labgate's code takes injected."""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass
class Clock:
    """Call it for the time; set ``now`` or ``advance`` it to move time on."""

    now: float = field(default_factory=time.time)

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
