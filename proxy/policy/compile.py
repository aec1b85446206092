"""Packs compiled for fast decisions: segment tries instead of route scans.

A decision walks a trie one path segment at a time, so a token type with 1,000
routes decides as fast as one with 10.  Compilation happens once per load; the
compiled form is immutable in use and shared by every request.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from proxy.policy.model import (
    ANY_METHOD,
    PARAM_VALUE,
    Pack,
    QueryRule,
    RouteTemplate,
    TokenType,
)


def fold_segment(segment: str, case_insensitive: bool) -> str:
    """Paths are ASCII by the time they get here, so ``lower`` is exact.

    ``casefold`` would map non-ASCII look-alikes ('ſ' -> 's') onto literals.
    """
    return segment.lower() if case_insensitive else segment


@dataclass
class _RouteNode:
    literal: dict[str, _RouteNode] = field(default_factory=dict)
    param: _RouteNode | None = None
    rules: dict[str, str] = field(default_factory=dict)  # method (or "*") -> rule id
    subtree: _RouteNode | None = None  # deny rules ending in '/**': this path and all below


@dataclass(frozen=True)
class RouteMatch:
    """What a route trie says about a request: the rule, or whether only the method missed."""

    rule: str | None
    path_matched: bool


_NO_MATCH = RouteMatch(None, False)


class RouteTrie:
    """Route templates by segment; literals are tried before ``{param}``.

    In an allow trie a ``{param}`` binds only a segment of :data:`PARAM_VALUE`
    (anything odd is not allowed: fail closed).  In a deny trie it binds any
    non-empty segment and a trailing slash is ignored, so an odd id or
    ``/V4/AccessToken/`` cannot slip past a deny rule.
    """

    def __init__(self, case_insensitive: bool, *, for_deny: bool = False) -> None:
        self._root = _RouteNode()
        self._case_insensitive = case_insensitive
        self._for_deny = for_deny

    def add(self, template: RouteTemplate, rule_id: str) -> None:
        node = self._root
        for segment in template.segments:
            if segment is None:
                node.param = node.param or _RouteNode()
                node = node.param
            else:
                key = fold_segment(segment, self._case_insensitive)
                node = node.literal.setdefault(key, _RouteNode())
        if template.subtree:
            node.subtree = node.subtree or _RouteNode()
            node = node.subtree
        node.rules.setdefault(template.method, rule_id)

    def match(self, method: str, segments: tuple[str, ...]) -> RouteMatch:
        root = self._root
        if not root.literal and root.param is None and not root.rules and root.subtree is None:
            return _NO_MATCH  # most types have no deny rules at all
        if self._for_deny and segments and segments[-1] == "":
            segments = segments[:-1]
        folded = tuple(s.lower() for s in segments) if self._case_insensitive else segments
        terminals = self._collect(folded)
        for node in terminals:
            rule = node.rules.get(method) or node.rules.get(ANY_METHOD)
            if rule is not None:
                return RouteMatch(rule, True)
        return RouteMatch(None, bool(terminals))

    def _collect(self, segments: tuple[str, ...]) -> list[_RouteNode]:
        """Every node whose template matches the whole path, literals first.

        Each trie node sits at one depth, so this visits each node at most once.
        A ``/**`` rule on the way down matches whatever lies below it.  A walk
        with its own stack rather than a recursion (one call per match, not one
        per node): a node's literal child is taken before its parameter child,
        and all below it before the parameter child, as a recursion would.
        """
        out: list[_RouteNode] = []
        end = len(segments)
        pending = [(self._root, 0)]
        while pending:
            node, depth = pending.pop()
            if node.subtree is not None:
                out.append(node.subtree)
            if depth == end:
                if node.rules:
                    out.append(node)
                continue
            segment = segments[depth]
            if node.param is not None and segment and (self._for_deny or PARAM_VALUE.fullmatch(segment)):
                pending.append((node.param, depth + 1))  # popped after the literal child's whole walk
            child = node.literal.get(segment)
            if child is not None:
                pending.append((child, depth + 1))
        return out


@dataclass
class _PrefixNode:
    children: dict[str, _PrefixNode] = field(default_factory=dict)
    rule: str | None = None


class PrefixTrie:
    """Endpoint prefixes matched on whole segments: ``/Client`` never opens ``/ClientGroup``."""

    def __init__(self, case_insensitive: bool) -> None:
        self._root = _PrefixNode()
        self._case_insensitive = case_insensitive

    def add(self, segments: tuple[str, ...], rule_id: str) -> None:
        node = self._root
        for segment in segments:
            node = node.children.setdefault(fold_segment(segment, self._case_insensitive), _PrefixNode())
        node.rule = node.rule or rule_id

    def match(self, segments: tuple[str, ...]) -> str | None:
        node = self._root
        if node.rule is not None:
            return node.rule
        for segment in segments:
            child = node.children.get(fold_segment(segment, self._case_insensitive))
            if child is None:
                return None
            node = child
            if node.rule is not None:
                return node.rule
        return None


def prefix_segments(prefix: str) -> tuple[str, ...]:
    """``/plans`` -> ("plans",); ``/`` -> (); a trailing ``/`` is ignored."""
    return tuple(s for s in prefix.strip("/").split("/") if s)


def prefix_matches(prefix: str, segments: tuple[str, ...], case_insensitive: bool) -> bool:
    """One prefix from a token's own list (few per token, so no trie)."""
    wanted = prefix_segments(prefix)
    if len(wanted) > len(segments):
        return False
    return all(
        fold_segment(w, case_insensitive) == fold_segment(s, case_insensitive)
        for w, s in zip(wanted, segments)
    )


@dataclass(frozen=True)
class CompiledTokenType:
    """A token type with its rules in tries, and the ids its denials report."""

    spec: TokenType
    pack: str
    routes: RouteTrie
    prefixes: PrefixTrie
    deny: RouteTrie
    case_insensitive: bool
    deny_except: RouteTrie | None = None

    def excepted(self, method: str, segments: tuple[str, ...]) -> bool:
        """Whether ``deny_except`` names exactly this operation (a trailing slash aside).

        Its ``{params}`` bind one segment of :data:`PARAM_VALUE`, as in routes.
        """
        if self.deny_except is None:
            return False
        if segments and segments[-1] == "":
            segments = segments[:-1]
        return self.deny_except.match(method, segments).rule is not None
    # The allowing route's rule id -> that route's own query rule (replaces the type's).
    route_queries: Mapping[str, QueryRule] = field(default_factory=dict)

    def rule_id(self, part: str) -> str:
        return f"{self.pack}/{self.spec.name}/{part}"


@dataclass(frozen=True)
class CompiledPack:
    pack: Pack
    token_types: Mapping[str, CompiledTokenType]
    public: RouteTrie = field(default_factory=lambda: RouteTrie(False))
    bodies: RouteTrie = field(default_factory=lambda: RouteTrie(False))

    @property
    def name(self) -> str:
        return self.pack.name


def compile_token_type(pack: Pack, spec: TokenType) -> CompiledTokenType:
    ci = pack.case_insensitive_paths
    exceptions = RouteTrie(ci) if spec.deny_except else None
    for route in spec.deny_except:
        assert exceptions is not None
        exceptions.add(route, f"deny_except/{route.text}")
    route_queries = {f"{pack.name}/{spec.name}/routes/{route.text}": rule for route, rule in spec.route_queries}
    compiled = CompiledTokenType(
        spec, pack.name, RouteTrie(ci), PrefixTrie(ci), RouteTrie(ci, for_deny=True), ci, exceptions, route_queries
    )
    for route in spec.routes:
        compiled.routes.add(route, compiled.rule_id(f"routes/{route.text}"))
    for prefix in spec.path_prefixes:
        compiled.prefixes.add(prefix_segments(prefix), compiled.rule_id(f"path_prefixes/{prefix}"))
    for denied in spec.deny:
        compiled.deny.add(denied, compiled.rule_id(f"deny/{denied.text}"))
    return compiled


def compile_pack(pack: Pack) -> CompiledPack:
    ci = pack.case_insensitive_paths
    public, bodies = RouteTrie(ci), RouteTrie(ci)
    for route in pack.public:
        public.add(route, f"{pack.name}/public/{route.text}")
    for route in pack.bodies:
        bodies.add(route, f"{pack.name}/bodies/{route.text}")
    return CompiledPack(
        pack, {name: compile_token_type(pack, spec) for name, spec in pack.token_types.items()}, public, bodies
    )
