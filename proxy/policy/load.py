"""Read policy pack files into :class:`~proxy.policy.model.Pack` values.

Every problem is reported as ``file:line: message``; a pack with any problem is
refused as a whole (a half-loaded policy could allow what the operator meant to
deny).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal, cast

from proxy.header_names import header_key, header_kind
from proxy.ipaddrs import AddressSet, InvalidAddress, parse_entry
from proxy.policy.compile import CompiledPack, compile_pack
from proxy.policy.endpoints import MATCH_MODES, WHOLE_SEGMENTS
from proxy.policy.model import (
    BODILESS_METHODS,
    ERROR_FORMATS,
    HeaderRules,
    Lifetimes,
    Pack,
    QueryRule,
    RouteTemplate,
    TokenType,
    parse_path_template,
)
from proxy.policy.rates import read_max_in_flight, read_rate_limit
from proxy.yamlsource import (
    FieldReader,
    LocatedDict,
    LocatedList,
    Problems,
    line_of,
    load_yaml_file,
    load_yaml_text,
)
from proxy.yamlsource import _kind as type_name

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
_QUERY_NAME = re.compile(r"[A-Za-z0-9_.$:~-]+")
_HEADER_NAME = re.compile(r"[A-Za-z0-9!#$%&'*+.^_`|~-]+")  # RFC 9110 section 5.6.2 token

PACK_KEYS = ("pack", "description", "paths", "repeated_slashes", "error_format", "headers", "public", "bodies", "token_types")
TOKEN_TYPE_KEYS = (
    "description",
    "routes",
    "path_prefixes",
    "deny",
    "deny_except",
    "query",
    "client_ips",
    "requires_token_prefixes",
    "token_prefix_match",
    "lifetimes",
    "shadow",
    "rate_limit",
    "max_in_flight",
)
LIFETIME_KEYS = ("ttl", "idle", "absolute", "refresh_until")


def load_pack_file(path: Path) -> Pack:
    """Load one pack file; raises ConfigError listing every problem."""
    return _read_pack(load_yaml_file(path), str(path))


def load_pack_text(text: str, file: str = "<pack>") -> Pack:
    return _read_pack(load_yaml_text(text, file), file)


def load_compiled_pack(path: Path) -> CompiledPack:
    return compile_pack(load_pack_file(path))


def _read_pack(document: Any, file: str) -> Pack:
    problems = Problems()
    reader = FieldReader(file, problems)
    if not isinstance(document, LocatedDict):
        problems.add(file, 1, "a policy pack must be a mapping with 'pack' and 'token_types'")
        problems.raise_if_any()
    root = cast(LocatedDict, document)
    reader.expect_keys(root, PACK_KEYS, "a policy pack")
    name = reader.string(root, "pack", required=True) or ""
    if name and not NAME.fullmatch(name):
        reader.error(root, "pack", f"pack name {name!r} must be lowercase letters, digits, '-' or '_'")
    paths = reader.choice(root, "paths", ("case-sensitive", "case-insensitive"), default="case-sensitive")
    types_section = reader.section(root, "token_types", required=True)
    token_types: dict[str, TokenType] = {}
    if types_section is not None:
        if not types_section:
            reader.error(root, "token_types", "a pack needs at least one token type")
        for type_name, body in types_section.items():
            token_type = _read_token_type(reader, types_section, type_name, body)
            if token_type is not None:
                token_types[type_name] = token_type
    problems.raise_if_any()
    return Pack(
        name=name,
        file=file,
        token_types=token_types,
        case_insensitive_paths=paths == "case-insensitive",
        repeated_slashes=reader.choice(root, "repeated_slashes", ("refuse", "merge"), default="refuse"),
        error_format=reader.choice(root, "error_format", ERROR_FORMATS, default="labgate"),
        description=reader.string(root, "description", default="") or "",
        headers=read_header_rules(reader, root) or HeaderRules(),
        public=_read_routes(reader, root, "public", allow_any_method=False),
        bodies=_read_body_routes(reader, root),
    )


def read_header_rules(reader: FieldReader, parent: LocatedDict) -> HeaderRules | None:
    """A pack's or an upstream's ``headers: {mode, allow}``; None when not given."""
    section = reader.section(parent, "headers")
    if section is None:
        return None
    reader.expect_keys(section, ("mode", "allow"), "headers")
    mode = reader.choice(section, "mode", ("standard", "strict"), default="standard")
    allowed: set[str] = set()
    items = section.get("allow")
    for index, (text, _line) in enumerate(reader.strings(section, "allow")):
        key = header_key(text)
        if not _HEADER_NAME.fullmatch(text):
            reader.error(items, index, f"headers.allow: {text!r} is not a header name")
        elif header_kind(key) == "reserved":
            reader.error(
                items, index,
                f"headers.allow: {text!r} carries a credential, a client address or framing; "
                "labgate sets those itself and never forwards a client's",
            )
        else:
            allowed.add(key)
    return HeaderRules(cast(Literal["standard", "strict"], mode), frozenset(allowed))


def _read_body_routes(reader: FieldReader, root: LocatedDict) -> tuple[RouteTemplate, ...]:
    routes = _read_routes(reader, root, "bodies", allow_any_method=False)
    items = root.get("bodies")
    for index, route in enumerate(routes):
        if route.method not in BODILESS_METHODS:
            reader.error(
                items,
                index,
                f"bodies: {route.text!r}: {route.method} may always carry a body; list only GET, HEAD, DELETE or OPTIONS routes",
            )
    return routes


def _read_token_type(reader: FieldReader, parent: LocatedDict, name: str, body: Any) -> TokenType | None:
    if not NAME.fullmatch(name):
        reader.error(parent, name, f"token type name {name!r} must be lowercase letters, digits, '-' or '_'")
    if not isinstance(body, LocatedDict):
        reader.error(parent, name, f"token type {name!r} must be a mapping")
        return None
    reader.expect_keys(body, TOKEN_TYPE_KEYS, f"token type {name!r}")
    routes, route_queries = _read_type_routes(reader, body)
    deny = _read_routes(reader, body, "deny", allow_any_method=True)
    deny_except = _read_exceptions(reader, body)
    prefixes = _read_prefixes(reader, body)
    requires_token_prefixes = reader.boolean(body, "requires_token_prefixes", default=False)
    if not routes and not prefixes and not (body.get("routes") or body.get("path_prefixes")):
        reader.error(body, None, f"token type {name!r} allows nothing: give it 'routes' or 'path_prefixes'")
    return TokenType(
        name=name,
        description=reader.string(body, "description", default="") or "",
        routes=routes,
        path_prefixes=prefixes,
        deny=deny,
        deny_except=deny_except,
        query=_read_query(reader, body),
        route_queries=route_queries,
        client_ips=read_address_set(reader, body, "client_ips"),
        requires_token_prefixes=requires_token_prefixes,
        token_prefix_match=reader.choice(body, "token_prefix_match", MATCH_MODES, default=WHOLE_SEGMENTS),
        lifetimes=_read_lifetimes(reader, body),
        shadow=reader.boolean(body, "shadow", default=False),
        rate_limit=read_rate_limit(reader, body, upstream=False),
        max_in_flight=read_max_in_flight(reader, body),
    )


_REPORTED = object()  # an item whose problem was already reported


def _read_routes(reader: FieldReader, body: LocatedDict, key: str, *, allow_any_method: bool) -> tuple[RouteTemplate, ...]:
    items = reader.items(body, key)
    if items is None:
        return ()
    return _parse_route_items(reader, key, list(items), items, allow_any_method=allow_any_method)[0]


def _parse_route_items(
    reader: FieldReader, key: str, texts: list[Any], items: LocatedList, *, allow_any_method: bool
) -> tuple[tuple[RouteTemplate, ...], list[int]]:
    """The routes written as ``texts`` (the items of ``items``) and the index each came from."""
    routes: list[RouteTemplate] = []
    kept: list[int] = []
    seen: set[tuple[str, tuple[str | None, ...], bool]] = set()
    for index, text in enumerate(texts):
        if text is _REPORTED:
            continue
        if not isinstance(text, str) or not text.strip():
            reader.error(items, index, f"items of {key!r} must be non-empty strings, not {type_name(text)}")
            continue
        try:
            route = RouteTemplate.parse(text, allow_any_method=allow_any_method)
        except ValueError as exc:
            reader.error(items, index, str(exc))
            continue
        identity = (route.method, route.segments, route.subtree)
        if identity in seen:
            reader.error(items, index, f"{key}: {route.text!r} is listed twice (or differs only in param names)")
            continue
        seen.add(identity)
        routes.append(route)
        kept.append(index)
    return tuple(routes), kept


def _read_type_routes(
    reader: FieldReader, body: LocatedDict
) -> tuple[tuple[RouteTemplate, ...], tuple[tuple[RouteTemplate, QueryRule], ...]]:
    """A type's ``routes``: each item a ``"METHOD /path"`` string or ``{route: ..., query: {...}}``.

    The mapping form gives that one route its own query rule, which replaces the
    type's ``query`` on it; the string form leaves the type's rule in force.
    """
    items = reader.items(body, "routes")
    if items is None:
        return (), ()
    texts: list[Any] = []
    queries: dict[int, QueryRule] = {}
    for index, item in enumerate(items):
        if not isinstance(item, LocatedDict):
            texts.append(item)
            continue
        reader.expect_keys(item, ("route", "query"), "a route entry")
        texts.append(item.get("route") if isinstance(item.get("route"), str) else _REPORTED)
        if not isinstance(item.get("route"), str) or "query" not in item:
            reader.error(items, index, "a route written as a mapping needs 'route' (a string, 'METHOD /path') and 'query'")
        rule = _read_query(reader, item)
        if rule is not None:
            queries[index] = rule
    routes, kept = _parse_route_items(reader, "routes", texts, items, allow_any_method=False)
    return routes, tuple((route, queries[index]) for route, index in zip(routes, kept) if index in queries)


def _read_exceptions(reader: FieldReader, body: LocatedDict) -> tuple[RouteTemplate, ...]:
    """``deny_except``: exact operations (one method, no '/**'), so an exception never opens more than it names."""
    routes = _read_routes(reader, body, "deny_except", allow_any_method=False)
    if routes and not body.get("deny"):
        reader.error(body, "deny_except", "deny_except makes exceptions to 'deny' rules: this type has none")
    return routes


def _read_prefixes(reader: FieldReader, body: LocatedDict) -> tuple[str, ...]:
    prefixes: list[str] = []
    items = body.get("path_prefixes")
    for index, (text, _line) in enumerate(reader.strings(body, "path_prefixes")):
        try:
            parse_path_template(text.rstrip("/") or "/", what=f"path prefix {text!r}", params=False)
        except ValueError as exc:
            reader.error(items, index, str(exc))
            continue
        prefixes.append(text.rstrip("/") or "/")
    return tuple(prefixes)


def _read_query(reader: FieldReader, body: LocatedDict) -> QueryRule | None:
    section = reader.section(body, "query")
    if section is None:
        return None
    reader.expect_keys(section, ("allow", "deny"), "query")
    modes = [m for m in ("allow", "deny") if m in section]
    if len(modes) != 1:
        reader.error(section, None, "query needs exactly one of 'allow' (safer) or 'deny'")
        return None
    mode = cast(Literal["allow", "deny"], modes[0])
    names: list[str] = []
    items = section.get(mode)
    if isinstance(items, list) and not items:
        return QueryRule.of(mode, [])
    for index, (text, _line) in enumerate(reader.strings(section, mode)):
        if not _QUERY_NAME.fullmatch(text):
            reader.error(items, index, f"query parameter name {text!r} may use only letters, digits and _ . $ : ~ -")
            continue
        names.append(text)
    return QueryRule.of(mode, names)


def read_address_set(reader: FieldReader, body: LocatedDict, key: str) -> AddressSet | None:
    """An IP allowlist with each bad entry reported at its own line."""
    if not reader.given(body, key, required=False):
        return None
    items = body.get(key)
    ranges = []
    for index, (text, _line) in enumerate(reader.strings(body, key)):
        try:
            ranges.append(parse_entry(text))
        except InvalidAddress as exc:
            reader.error(items, index, f"{key}: {exc}")
    return AddressSet.from_ranges(ranges)


def _read_lifetimes(reader: FieldReader, body: LocatedDict) -> Lifetimes:
    section = reader.section(body, "lifetimes")
    if section is None:
        return Lifetimes()
    reader.expect_keys(section, LIFETIME_KEYS, "lifetimes")
    lifetimes = Lifetimes(*(reader.duration(section, key) for key in LIFETIME_KEYS))
    if lifetimes.ttl and lifetimes.absolute and lifetimes.ttl > lifetimes.absolute:
        reader.error(section, "ttl", "ttl cannot be longer than absolute")
    if lifetimes.idle and lifetimes.absolute and lifetimes.idle > lifetimes.absolute:
        reader.error(section, "idle", "idle cannot be longer than absolute")
    return lifetimes


__all__ = ["load_pack_file", "load_pack_text", "load_compiled_pack", "read_address_set", "line_of"]
