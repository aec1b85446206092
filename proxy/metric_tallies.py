"""Counting on the request path without prometheus-client's per-call cost, read exactly as if it had been used.

In a single process, the request path's counters and histograms are tallied in
plain ints and floats and handed to prometheus-client whenever the registry is
read (:class:`Fold` for counters, :meth:`TalliedHistogram._child_samples` for
histograms): what any reader sees is what counting at once would have shown.
With several workers (``PROMETHEUS_MULTIPROC_DIR``) other processes read the
shared values at any time, so :mod:`proxy.metrics` counts at once there
(:class:`CountNow`, plain ``Histogram``).  Used by the event loop's thread only.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable
from typing import Any

from prometheus_client import Histogram
from prometheus_client.samples import Sample


class CountNow:
    """A counter child counted at once: with several workers, others read the shared values at any time."""

    __slots__ = ("child",)

    def __init__(self, child: Any) -> None:
        self.child = child

    def count(self) -> None:
        self.child.inc()


class CountLater(CountNow):
    """A counter child's increments summed in a plain int, added to the child whenever the registry is read.

    prometheus-client's ``inc()`` is five Python calls and a lock; this is one
    addition.  What any reader sees is the same: :class:`Fold` adds what is
    pending before any family is collected.  Used by the event loop's thread only.
    """

    __slots__ = ("pending",)

    def __init__(self, child: Any) -> None:
        super().__init__(child)
        self.pending = 0

    def count(self) -> None:
        self.pending += 1

    def fold(self) -> None:
        pending, self.pending = self.pending, 0
        if pending:
            self.child.inc(pending)


class CacheLookups:
    """What a token source calls on each verified-token cache lookup (``True``: a hit), counted into two children.

    ``hits`` is the hit counter when it counts later (a single process): a source
    adds to its ``pending`` itself on a hit, the request path's common case,
    without a call.  None with several workers: call this instead.
    """

    __slots__ = ("hit", "miss", "hits")

    def __init__(self, hit: CountNow, miss: CountNow) -> None:
        self.hit, self.miss = hit, miss
        self.hits = hit if isinstance(hit, CountLater) else None

    def __call__(self, found: bool) -> None:
        (self.hit if found else self.miss).count()


class TalliedHistogram(Histogram):
    """A histogram whose children tally observations in plain ints and a float, handed to prometheus-client when read.

    prometheus-client's ``observe()`` is five Python calls and a lock per value; a
    tally is one :func:`bisect.bisect_left` (the first bound at or above the
    amount, as ``observe`` picks it) and two additions.  The tallies are the
    child's own counts, not a delta: reading sets the library's values to them,
    so every read sees every observation and the sum is added up in the same order
    as ``observe`` would (the same float).  Used in a single process only (with
    several workers, others read the shared values at any time) and by one
    thread, like :class:`CountLater`.
    """

    bounds: list[float]  # the buckets' upper bounds, +Inf last: tallies[i] counts those in bucket i
    tallies: list[int]
    tallied_sum: float

    def _metric_init(self) -> None:
        super()._metric_init()
        self.bounds = self._upper_bounds
        self.tallies = [0] * len(self.bounds)
        self.tallied_sum = 0.0

    def observe(self, amount: float, exemplar: dict[str, str] | None = None) -> None:
        """Tallied; exemplars are refused: the text format labgate exposes has none to show."""
        if exemplar:
            raise ValueError("labgate's request histograms keep no exemplars")
        self.tallies[bisect_left(self.bounds, amount)] += 1
        self.tallied_sum += amount

    def _child_samples(self) -> Iterable[Sample]:
        self._sum.set(self.tallied_sum)
        for value, count in zip(self._buckets, self.tallies):
            value.set(float(count))
        return super()._child_samples()


class Fold:
    """A collector of no families of its own, registered first: every read of the registry folds pending counts in."""

    def __init__(self) -> None:
        self.counts: list[CountLater] = []

    def describe(self) -> list[Any]:
        return []

    def collect(self) -> list[Any]:
        for count in self.counts:
            count.fold()
        return []
