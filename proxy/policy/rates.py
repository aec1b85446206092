"""Rate limits as written: ``60/min`` or ``{requests: 600, per: 1h, by: subject}``.

A token type's ``rate_limit`` (in its pack) spends a budget per token (the
default), per subject or per client id; an upstream's ``rate_limit`` (in the
config) one budget for every client of the appliance together.  Reading happens
once, here; every problem is reported at its file and line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal, cast

from proxy.yamlsource import FieldReader, LocatedDict, parse_duration

RateKey = Literal["token", "subject", "client_id", "upstream"]
TYPE_KEYS: tuple[RateKey, ...] = ("token", "subject", "client_id")
StoreFailure = Literal["closed", "open"]

_SHORT = re.compile(r"\s*([0-9]+)\s*/\s*([0-9]*)\s*([a-z]+)\s*")
_UNITS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600, "d": 86400, "day": 86400}
MAX_REQUESTS = 10**9
MAX_PERIOD = 366 * 86400.0
# How long a request waits for a place under max_in_flight before 503 upstream_busy:
# long enough to ride out a burst, short enough that a client's own timeout has not fired.
DEFAULT_QUEUE_TIMEOUT = 2.0
MAX_QUEUE_TIMEOUT = 60.0
MAX_IN_FLIGHT = 100_000
# How long reserved units may wait in a replica before they are dropped: the time for which
# other replicas may be refused early while this one holds units it has not spent.  Not N
# emission intervals: on a fast limit those are shorter than a round trip to Redis, and a
# replica sharing a limit spends slower than the limit's own rate, so its units would expire
# unspent (measured in bench/README.md, "Reserving units of a Redis limit").
RESERVE_LIFETIME = 1.0


@dataclass(frozen=True)
class RateLimit:
    """``requests`` per ``per`` seconds, spent per ``by``; ``store_failure`` says what an unreachable store means.

    The whole budget may go at once after a quiet period, then one request
    every ``per / requests`` seconds (GCRA, :mod:`proxy.store.gcra`).  With
    ``reserve`` (Redis only) a replica takes up to that many units from the
    shared budget in one round trip and spends them in process for at most
    :attr:`reserve_lifetime` seconds; None checks every request with the store.
    The memory and SQLite stores keep budgets in process already and ignore it.
    """

    requests: int
    per: float
    by: RateKey = "token"
    store_failure: StoreFailure = "closed"
    reserve: int | None = None

    @property
    def interval(self) -> float:
        return self.per / self.requests

    @property
    def reserve_lifetime(self) -> float:
        """How long reserved units stay spendable, from the moment the replica asked for them."""
        return RESERVE_LIFETIME

    @property
    def text(self) -> str:
        """As ``labgate explain`` and the ``RateLimit-Policy`` header name it."""
        return f"{self.requests}/{_seconds_text(self.per)} by {self.by}"


def read_rate_limit(reader: FieldReader, parent: LocatedDict, *, upstream: bool) -> RateLimit | None:
    """``parent['rate_limit']`` in either form; None when absent or wrong (the problem reported)."""
    if "rate_limit" not in parent or parent["rate_limit"] is None:
        return None
    value = parent["rate_limit"]
    if isinstance(value, str):
        return _read_short(reader, parent, value, upstream=upstream)
    if not isinstance(value, LocatedDict):
        reader.error(parent, "rate_limit", "rate_limit must be like '60/min' or {requests: 600, per: 1h}")
        return None
    keys = ("requests", "per", "store_failure", "reserve") if upstream else ("requests", "per", "by", "store_failure", "reserve")
    reader.expect_keys(value, keys, "an upstream's rate_limit" if upstream else "rate_limit")
    requests = _requests(reader, value)
    per = _period(reader, value)
    by = "upstream" if upstream else reader.choice(value, "by", TYPE_KEYS, default="token")
    failure = reader.choice(value, "store_failure", ("closed", "open"), default="closed")
    reserve = _reserve(reader, value, requests)
    if requests is None or per is None:
        return None
    return RateLimit(requests, per, cast(RateKey, by), cast(StoreFailure, failure), reserve)


def read_max_in_flight(reader: FieldReader, parent: LocatedDict) -> int | None:
    """``max_in_flight``: a whole number of requests from 1; None when absent or wrong (reported)."""
    if not reader.given(parent, "max_in_flight", required=False):
        return None
    value = parent["max_in_flight"]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_IN_FLIGHT:
        reader.error(parent, "max_in_flight", f"max_in_flight must be a whole number from 1 to {MAX_IN_FLIGHT}, not {value!r}")
        return None
    return value


def read_in_flight(reader: FieldReader, parent: LocatedDict) -> tuple[int | None, float]:
    """An upstream's ``max_in_flight`` and ``queue_timeout`` (a duration, 0 for no waiting at all)."""
    cap = read_max_in_flight(reader, parent)
    wait = DEFAULT_QUEUE_TIMEOUT
    if reader.given(parent, "queue_timeout", required=False):
        value = parent["queue_timeout"]
        try:
            wait = 0.0 if value == 0 and not isinstance(value, bool) else parse_duration(value)
        except ValueError as exc:
            reader.error(parent, "queue_timeout", f"queue_timeout: {exc}")
        if wait > MAX_QUEUE_TIMEOUT:
            reader.error(parent, "queue_timeout", "queue_timeout must be at most 60s")
        if cap is None and "max_in_flight" not in parent:
            reader.error(parent, "queue_timeout", "queue_timeout has no effect without max_in_flight")
    return cap, min(wait, MAX_QUEUE_TIMEOUT)


def _read_short(reader: FieldReader, parent: LocatedDict, text: str, *, upstream: bool) -> RateLimit | None:
    """``60/min``, ``1000/h``, ``100/1h``, ``5/30s``: requests per a unit or a duration."""
    found = _SHORT.fullmatch(text)
    if found is None or found.group(3) not in _UNITS:
        reader.error(parent, "rate_limit", f"rate_limit {text!r} must be like '60/min', '1000/hour' or '100/30s'")
        return None
    requests, count, unit = int(found.group(1)), found.group(2), found.group(3)
    per = float((int(count) if count else 1) * _UNITS[unit])
    problem = _out_of_range(requests, per)
    if problem:
        reader.error(parent, "rate_limit", f"rate_limit {text!r}: {problem}")
        return None
    return RateLimit(requests, per, "upstream" if upstream else "token")


def _requests(reader: FieldReader, section: LocatedDict) -> int | None:
    if not reader.given(section, "requests", required=True):
        return None
    value = section["requests"]
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_REQUESTS:
        reader.error(section, "requests", f"rate_limit requests must be a whole number from 1 to {MAX_REQUESTS}, not {value!r}")
        return None
    return value


def _reserve(reader: FieldReader, section: LocatedDict, requests: int | None) -> int | None:
    """``reserve``: units a replica takes from a shared budget at once, from 2 to the limit's ``requests``."""
    if not reader.given(section, "reserve", required=False):
        return None
    value, most = section["reserve"], requests if requests is not None else MAX_REQUESTS
    if isinstance(value, bool) or not isinstance(value, int) or not 2 <= value <= most:
        reader.error(section, "reserve", f"rate_limit reserve must be a whole number from 2 to its requests ({most}), not {value!r}")
        return None
    return value


def _period(reader: FieldReader, section: LocatedDict) -> float | None:
    if not reader.given(section, "per", required=True):
        return None
    try:
        per = parse_duration(section["per"])
    except ValueError as exc:
        reader.error(section, "per", f"rate_limit per: {exc}")
        return None
    if per > MAX_PERIOD:
        reader.error(section, "per", "rate_limit per must be at most 366d")
        return None
    return per


def _out_of_range(requests: int, per: float) -> str:
    if not 1 <= requests <= MAX_REQUESTS:
        return f"the number of requests must be from 1 to {MAX_REQUESTS}"
    if per <= 0 or per > MAX_PERIOD:
        return "the period must be more than 0 and at most 366d"
    return ""


def _seconds_text(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            count = int(seconds // size)
            return unit if count == 1 else f"{count}{unit}"
    return f"{seconds:g}s"


def rate_limit_fields(limit: RateLimit) -> dict[str, Any]:
    """The limit as ``labgate explain`` prints it."""
    fields: dict[str, Any] = {"requests": limit.requests, "per_seconds": limit.per, "by": limit.by, "store_failure": limit.store_failure}
    if limit.reserve is not None:
        fields["reserve"] = limit.reserve
    return fields
