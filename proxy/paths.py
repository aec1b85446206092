"""The path contract: one unambiguous reading of a request target, or a 400.

Proxies and appliances disagree about ``%2F``, ``..``, ``;`` and ``\\`` (the
root of path-confusion bypasses such as CVE-2021-41773 and Tomcat's ``;``
path parameters).  labgate does not normalize its way around that: a target
that two servers could read differently is refused before any policy runs,
and the one it accepts is forwarded byte for byte.

Choices (documented in docs/concepts/path-contract.md):
- repeated slashes (``/api//hosts``) are refused, not merged, unless the
  upstream's pack says its appliance merges them (``repeated_slashes: merge``,
  Commvault, whose own SDK writes ``<base>//V4/...``): then the target is
  read merged and forwarded merged, so the appliance gets the path decided on;
- a trailing slash is kept and is a different path (``/api/hosts/`` does not
  match the route ``GET /api/hosts``);
- percent-encoded bytes that decode to ``/ \\ % . ; ? #``, controls or
  non-ASCII are refused; any other escape (``%73`` for ``s``) is decoded
  for matching while the raw form is forwarded.
- query parameter names are percent-decoded, lower-cased and cut at ``[``
  before any rule sees them, so ``SORT``, ``s%6Frt`` and ``sort[]`` all are
  ``sort``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from proxy.errors import LabgateError
from proxy.reasons import Reason

# RFC 3986 pchar minus ';' (path parameters) plus '/'; '%' is checked apart.
_PATH_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,=:@/%]*")
# What a query may carry raw: RFC 3986 query chars minus ';' (an old separator).
_QUERY_CHARS = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,=:@/?%\[\]]*")  # '[]' as clients send sort[]
_MERGED_SLASHES = re.compile(r"//+")
_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ESCAPED = re.compile(r"%([0-9A-Fa-f]{2})")
_QUERY_NAME = re.compile(r"[A-Za-z0-9_.\-$:~\[\]]+")
# Bytes that must never hide behind a %XX in a path.
_FORBIDDEN_DECODED = frozenset(b"/\\%.;?#") | frozenset(range(0x20)) | frozenset(range(0x7F, 0x100))


class TargetError(LabgateError):
    """Why a target was refused: a stable reason and a safe detail."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail, reason)


@dataclass(frozen=True)
class RequestTarget:
    """A checked request target.

    ``raw_path`` and ``raw_query`` are exactly what arrived (and what is
    forwarded), except that repeated slashes are merged in ``raw_path`` when
    ``merged_slashes`` says there were some (refused unless the pack merges);
    ``segments`` are the decoded path segments policies match on, with a
    final ``""`` for a trailing slash; ``query_names`` holds one normalized
    name per parameter occurrence.
    """

    raw_path: str
    raw_query: str | None
    segments: tuple[str, ...]
    raw_segments: tuple[str, ...]
    query_names: tuple[str, ...]
    merged_slashes: bool = False

    @property
    def forward_target(self) -> str:
        return self.raw_path if self.raw_query is None else f"{self.raw_path}?{self.raw_query}"

    @property
    def path(self) -> str:
        return self.raw_path

    def strip_prefix(self, prefix: str) -> RequestTarget | None:
        """The target below ``prefix`` (``/svt``), or None when the path is not under it.

        The prefix matches whole decoded segments, case-sensitively:
        ``/svt`` covers ``/svt`` and ``/svt/...`` but not ``/svtx``.
        """
        wanted = tuple(s for s in prefix.split("/") if s)
        if self.segments[: len(wanted)] != wanted:
            return None
        rest_raw = self.raw_segments[len(wanted) :]
        rest = self.segments[len(wanted) :]
        if rest == ("",):  # '/svt/' -> '/'
            rest_raw, rest = (), ()
        raw_path = "/" + "/".join(rest_raw)
        return RequestTarget(raw_path, self.raw_query, rest, rest_raw, self.query_names, self.merged_slashes)


def normalize_query_name(name: str) -> str:
    """How every rule and every request names a query parameter."""
    return name.lower().split("[", 1)[0]


def parse_target(raw: str, *, max_query_params: int = 256, merge_slashes: bool = False) -> RequestTarget:
    """Check an origin-form target (``/path?query``); TargetError says why not.

    ``merge_slashes``: read ``//`` as ``/`` (and say so in ``merged_slashes``)
    instead of refusing it: for an appliance that merges them itself.
    """
    if not raw.startswith("/"):
        raise TargetError(Reason.BAD_REQUEST, "the request target must be a path starting with '/'")
    if "#" in raw:
        raise TargetError(Reason.BAD_REQUEST, "a request target cannot carry a fragment ('#')")
    raw_path, question, raw_query = raw.partition("?")
    merged = merge_slashes and "//" in raw_path
    if merged:
        raw_path = _MERGED_SLASHES.sub("/", raw_path)
    segments, raw_segments = _check_path(raw_path)
    names = _check_query(raw_query, max_query_params) if question else ()
    return RequestTarget(raw_path, raw_query if question else None, segments, raw_segments, names, merged)


REPEATED_SLASHES = "the path contains an empty segment ('//')"


def _check_path(raw_path: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if not _PATH_CHARS.fullmatch(raw_path):
        bad = next(c for c in raw_path if not _PATH_CHARS.fullmatch(c))
        raise TargetError(Reason.AMBIGUOUS_PATH, f"the path contains a character that must not appear unencoded ({_show(bad)})")
    if _ESCAPE.search(raw_path):
        raise TargetError(Reason.AMBIGUOUS_PATH, "the path contains an invalid percent-encoding")
    if raw_path == "/":
        return (), ()
    raw_segments = tuple(raw_path[1:].split("/"))
    if "" in raw_segments[:-1]:
        raise TargetError(Reason.AMBIGUOUS_PATH, REPEATED_SLASHES)
    segments = tuple(_decode_segment(s) for s in raw_segments)
    return segments, raw_segments


def _decode_segment(raw: str) -> str:
    if raw in (".", ".."):
        raise TargetError(Reason.AMBIGUOUS_PATH, "the path contains a dot segment ('.' or '..')")
    if "%" not in raw:
        return raw
    # Only the escapes themselves are checked: a raw '.' beside an escape ('v1.2%2D3')
    # cannot make a dot segment, since '%2E' is refused wherever it appears.
    escaped = {int(code, 16) for code in _ESCAPED.findall(raw)}
    bad = _FORBIDDEN_DECODED.intersection(escaped)
    if bad:
        byte = min(bad)
        raise TargetError(Reason.AMBIGUOUS_PATH, f"the path encodes a byte that must not be encoded (%{byte:02X})")
    return unquote_to_bytes(raw).decode("ascii")


def _check_query(raw_query: str, max_params: int) -> tuple[str, ...]:
    if not _QUERY_CHARS.fullmatch(raw_query):
        bad = next(c for c in raw_query if not _QUERY_CHARS.fullmatch(c))
        raise TargetError(Reason.BAD_QUERY, f"the query contains a character that must be encoded ({_show(bad)})")
    if _ESCAPE.search(raw_query):
        raise TargetError(Reason.BAD_QUERY, "the query contains an invalid percent-encoding")
    pairs = [p for p in raw_query.split("&") if p]
    if len(pairs) > max_params:
        raise TargetError(Reason.BAD_QUERY, f"more than {max_params} query parameters")
    return tuple(_query_name(pair) for pair in pairs)


def _query_name(pair: str) -> str:
    raw_name, _, raw_value = pair.partition("=")
    name = _decode_query_part(raw_name, "name")
    if not name:
        raise TargetError(Reason.BAD_QUERY, "a query parameter has an empty name")
    if not _QUERY_NAME.fullmatch(name):
        raise TargetError(Reason.BAD_QUERY, f"query parameter name {name[:64]!r} has characters labgate does not accept")
    value = _decode_query_part(raw_value, "value")
    # C0, DEL and C1 (U+0080-U+009F, e.g. NEL from '%C2%85'): control characters, whatever their encoding.
    if any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value):
        raise TargetError(Reason.BAD_QUERY, f"query parameter {name[:64]!r} has a control character in its value")
    return normalize_query_name(name)


def _decode_query_part(raw: str, what: str) -> str:
    if "%" not in raw and "+" not in raw:
        return raw  # already checked to be plain ASCII
    try:
        return unquote_to_bytes(raw.replace("+", " ")).decode("utf-8")
    except UnicodeDecodeError:
        raise TargetError(Reason.BAD_QUERY, f"a query parameter {what} is not valid UTF-8") from None


def _show(char: str) -> str:
    return repr(char) if char.isprintable() and char.isascii() else f"U+{ord(char):04X}"
