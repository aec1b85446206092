"""Which headers cross labgate, in each direction.

Outbound headers are built by construction, never as "the request minus what
is known to be bad": each client header passes only if its kind allows it
(:mod:`proxy.header_names`: reserved headers never, sensitive ones only when
listed, ordinary ones in ``standard`` mode or when listed in ``strict`` mode),
minus whatever ``Connection`` names (RFC 9110 section 7.6.1; Traefik
CVE-2024-45410).  labgate then sets ``X-Forwarded-*`` and the one credential
the appliance needs; the transport sets ``Host``, ``X-Request-ID`` (last: it
is the one line that changes from one request to the next) and framing.

Headers travel as plain ``(name, value)`` lists in both directions: every
request builds one outbound list and one answer list, and nothing else copies
them (a multidict is built once, by aiohttp, for the client's answer).
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping, Sequence
from itertools import compress
from operator import itemgetter

from multidict import CIMultiDict, CIMultiDictProxy

from proxy.header_names import HOP_BY_HOP, header_key, header_kind
from proxy.policy.model import HeaderRules

Pairs = list[tuple[str, str]]

_DROPPED_RESPONSE = HOP_BY_HOP | {"proxy-authenticate", "x-request-id"}
# Verdicts remembered per header spelling and filter; names are client-controlled, so bounded.
_MAX_VERDICTS = 2048


def connection_named(headers: CIMultiDictProxy[str] | CIMultiDict[str]) -> set[str]:
    """Header keys listed in every ``Connection`` header (all hop-by-hop)."""
    return _named(headers.getall("Connection", ()))


def _named(values: Iterable[str]) -> set[str]:
    named: set[str] = set()
    for value in values:
        named.update(header_key(part.strip()) for part in value.split(",") if part.strip())
    return named


def passes(key: str, rules: HeaderRules) -> bool:
    """Whether a client header (by its key) may reach the appliance under ``rules``."""
    kind = header_kind(key)
    if kind == "reserved":
        return False
    if rules.mode == "strict" or kind == "sensitive":
        return key in rules.allow
    return True


class HeaderFilter:
    """:func:`passes` for one upstream's rules, remembered per header spelling.

    The verdict depends only on the name and the rules, so a client repeating
    the same headers costs one dict lookup per header.
    """

    def __init__(self, rules: HeaderRules) -> None:
        self.rules = rules
        self._verdicts: dict[str, bool] = {}
        # A client sends the same header names request after request: their verdicts as one mask
        # (looked up in C: functools' cache).
        self.mask = functools.lru_cache(maxsize=_MAX_VERDICTS)(self._verdicts_of)

    def _verdicts_of(self, names: tuple[str, ...]) -> tuple[bool, ...]:
        return tuple(map(self.passes, names))

    def passes(self, name: str) -> bool:
        verdict = self._verdicts.get(name)
        if verdict is None:
            verdict = passes(header_key(name), self.rules)
            if len(self._verdicts) < _MAX_VERDICTS:
                self._verdicts[name] = verdict
        return verdict


def outbound_headers(
    incoming: CIMultiDictProxy[str],
    *,
    rules: HeaderFilter,
    client_ip: str,
    proto: str,
    original_host: str | None,
    credential: tuple[str, str] | None,
) -> Pairs:
    """What the appliance sees, in order: the client headers ``rules`` let pass, then labgate's own.

    Pure in its arguments (the request id is not one of them: the transport sends it),
    so the forwarder builds it once per distinct request head.

    ``credential``: the one ``(header, value)`` that authenticates the request upstream
    (labgate's upstream credential, or the appliance's own token re-emitted), or None.
    """
    items = incoming.items()  # names read from the items: a multidict's own keys() lists each name once
    result = list(compress(items, rules.mask(tuple(map(_NAME, items)))))
    if result and "Connection" in incoming:  # Connection itself never passes; what it names must not either
        named = connection_named(incoming)
        result = [(name, value) for name, value in result if header_key(name) not in named]
    result.append(("X-Forwarded-For", client_ip))
    result.append(("X-Forwarded-Proto", proto))
    if original_host:
        result.append(("X-Forwarded-Host", original_host))
    if credential is not None:
        result.append(credential)
    return result


class RememberedHeads(dict[tuple[object, ...], tuple[tuple[str, str], ...]]):
    """Outbound header lists by what they were built from: the filter, the client's raw head, its address, the credential.

    :func:`outbound_headers` is pure in those, and clients repeat their head byte
    for byte, so a repeated request costs one dict lookup (``get``, in C) and gets
    the very same tuple, whose wire form the ``http1`` transport remembers as well.
    Bounded, as heads are client-controlled: emptied when full.
    """

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit

    def remember(self, key: tuple[object, ...], headers: tuple[tuple[str, str], ...]) -> None:
        if len(self) >= self.limit:
            self.clear()
        self[key] = headers


def header_value(pairs: Sequence[tuple[str, str]], name: str) -> str | None:
    """The first value of ``name`` (any case) in a header list, or None."""
    wanted = name.lower()
    for candidate, value in pairs:
        if candidate.lower() == wanted:
            return value
    return None


def answer_headers(
    upstream: Sequence[tuple[str, str]], request_id: str, replaced: Mapping[str, str] | None = None
) -> tuple[Pairs, str]:
    """The appliance's response headers minus hop-by-hop ones, plus our request id; and their ``Content-Length`` ("" if none).

    ``replaced`` (labgate's own rate-limit headers) take the place of any the appliance sent under the same names.
    The length comes with them because the forwarder needs it for every answer, and the mask already knows where it is.
    """
    if not replaced:
        mask, connection, length_at = _answer_mask(tuple(map(_NAME, upstream)))
        # Most answers name only keep-alive or close in their one Connection header, both dropped anyway.
        if not connection or (len(connection) == 1 and _tokens(upstream[connection[0]][1]) <= _DROPPED_RESPONSE):
            result = list(compress(upstream, mask))
            result.append(("X-Request-ID", request_id))
            return result, upstream[length_at][1] if length_at >= 0 else ""
    keys = [header_key(name) for name, _ in upstream]
    dropped = _DROPPED_RESPONSE
    if "connection" in keys:
        named = _named(value for (_, value), key in zip(upstream, keys) if key == "connection")
        if not named <= _DROPPED_RESPONSE:  # most name only keep-alive or close, dropped anyway
            dropped = dropped | named
    if replaced:
        dropped = dropped | {header_key(name) for name in replaced}
    result = [pair for pair, key in zip(upstream, keys) if key not in dropped]
    result.append(("X-Request-ID", request_id))
    if replaced:
        result.extend(replaced.items())
    return result, header_value(result, "Content-Length") or ""


_NAME = itemgetter(0)


@functools.lru_cache(maxsize=_MAX_VERDICTS)  # an appliance answers with the same few header sets
def _answer_mask(names: tuple[str, ...]) -> tuple[tuple[bool, ...], tuple[int, ...], int]:
    """Which of an answer's headers pass when its ``Connection`` names nothing more, where its ``Connection`` headers are,
    and where its first ``Content-Length`` is (-1: none)."""
    keys = [header_key(name) for name in names]
    return (
        tuple(key not in _DROPPED_RESPONSE for key in keys),
        tuple(i for i, key in enumerate(keys) if key == "connection"),
        keys.index("content-length") if "content-length" in keys else -1,
    )


@functools.lru_cache(maxsize=_MAX_VERDICTS)
def _tokens(connection: str) -> frozenset[str]:
    """The header keys one ``Connection`` value names."""
    return frozenset(_named((connection,)))


def response_headers(upstream: CIMultiDictProxy[str], request_id: str) -> CIMultiDict[str]:
    """:func:`answer_headers` as a multidict, for answers labgate reads before it answers."""
    return CIMultiDict(answer_headers(list(upstream.items()), request_id)[0])
