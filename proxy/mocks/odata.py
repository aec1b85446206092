"""The OData filter subset of the HPE GreenLake APIs, for the mock Compute Ops Management.

``filter=state/managed eq true and contains(name,'MXQ')``: comparisons
``eq ne gt ge lt le``, ``in ('a','b')``, ``and or not``, parentheses, and
``contains(property,'text')``; properties are paths with ``/``; literals are
single-quoted strings (``''`` is a quote), numbers, ``true``, ``false`` and
``null`` (the HPE GreenLake Compute Ops Management API reference).  A filter that cannot be read, or
names a property the collection does not have, is a :class:`FilterError`: the
API answers 400.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

Predicate = Callable[[Mapping[str, Any]], bool]

_TOKEN = re.compile(r"\s*(?:('(?:[^']|'')*')|(-?\d+(?:\.\d+)?)|([A-Za-z_][A-Za-z0-9_]*)|([()/,]))")
_COMPARISONS: Mapping[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "ne": lambda a, b: a != b,
    "gt": lambda a, b: a > b,
    "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b,
    "le": lambda a, b: a <= b,
}
_KEYWORDS = {"and", "or", "not", "in", "contains", "true", "false", "null", *_COMPARISONS}
_MAX_LENGTH = 2048


class FilterError(ValueError):
    """The filter is not in the supported subset; the message says where."""


@dataclass(frozen=True)
class _Token:
    kind: str  # string, number, word, punct, end
    text: str


def property_paths(item: Mapping[str, Any], prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every property path of an item (nested objects included), which a filter may name."""
    paths: set[tuple[str, ...]] = set()
    for name, value in item.items():
        paths.add(prefix + (name,))
        if isinstance(value, Mapping):
            paths |= property_paths(value, prefix + (name,))
    return paths


def parse_filter(text: str, known: Iterable[tuple[str, ...]]) -> Predicate:
    """A predicate over items for ``text``; raises FilterError."""
    if len(text) > _MAX_LENGTH:
        raise FilterError("filter is too long")
    parser = _Parser(_tokenize(text), frozenset(known))
    predicate = parser.expression()
    parser.expect_end()
    return predicate


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    at = 0
    while text[at:].strip():
        match = _TOKEN.match(text, at)
        if match is None:
            raise FilterError(f"unexpected character at position {at}")
        string, number, word, punct = match.groups()
        if string is not None:
            tokens.append(_Token("string", string[1:-1].replace("''", "'")))
        elif number is not None:
            tokens.append(_Token("number", number))
        elif word is not None:
            tokens.append(_Token("word", word))
        else:
            tokens.append(_Token("punct", punct))
        at = match.end()
    tokens.append(_Token("end", ""))
    return tokens


class _Parser:
    """Recursive descent: or binds loosest, then and, then not."""

    def __init__(self, tokens: list[_Token], known: frozenset[tuple[str, ...]]) -> None:
        self._tokens = tokens
        self._at = 0
        self._known = known

    def _peek(self) -> _Token:
        return self._tokens[self._at]

    def _take(self) -> _Token:
        token = self._tokens[self._at]
        self._at += 1
        return token

    def _accept(self, kind: str, text: str) -> bool:
        token = self._peek()
        if token.kind == kind and token.text == text:
            self._at += 1
            return True
        return False

    def _require(self, kind: str, text: str) -> None:
        if not self._accept(kind, text):
            raise FilterError(f"expected {text!r} but found {self._peek().text or 'the end'!r}")

    def expect_end(self) -> None:
        if self._peek().kind != "end":
            raise FilterError(f"unexpected {self._peek().text!r}")

    def expression(self) -> Predicate:
        terms = [self._and()]
        while self._accept("word", "or"):
            terms.append(self._and())
        return terms[0] if len(terms) == 1 else (lambda item: any(t(item) for t in terms))

    def _and(self) -> Predicate:
        terms = [self._not()]
        while self._accept("word", "and"):
            terms.append(self._not())
        return terms[0] if len(terms) == 1 else (lambda item: all(t(item) for t in terms))

    def _not(self) -> Predicate:
        if self._accept("word", "not"):
            inner = self._not()
            return lambda item: not inner(item)
        return self._primary()

    def _primary(self) -> Predicate:
        if self._accept("punct", "("):
            inner = self.expression()
            self._require("punct", ")")
            return inner
        if self._accept("word", "contains"):
            self._require("punct", "(")
            path = self._path()
            self._require("punct", ",")
            needle = self._literal()
            self._require("punct", ")")
            if not isinstance(needle, str):
                raise FilterError("contains() takes a string")
            return lambda item: isinstance(found := _value_at(item, path), str) and needle in found
        path = self._path()
        operator = self._take()
        if operator.kind == "word" and operator.text == "in":
            self._require("punct", "(")
            options = [self._literal()]
            while self._accept("punct", ","):
                options.append(self._literal())
            self._require("punct", ")")
            return lambda item: _value_at(item, path) in options
        compare = _COMPARISONS.get(operator.text) if operator.kind == "word" else None
        if compare is None:
            raise FilterError(f"expected a comparison operator but found {operator.text or 'the end'!r}")
        value = self._literal()
        return lambda item: _compare(compare, operator.text, _value_at(item, path), value)

    def _path(self) -> tuple[str, ...]:
        parts = [self._name()]
        while self._accept("punct", "/"):
            parts.append(self._name())
        path = tuple(parts)
        if path not in self._known:
            raise FilterError(f"unknown property {'/'.join(path)!r}")
        return path

    def _name(self) -> str:
        token = self._take()
        if token.kind != "word" or token.text in _KEYWORDS:
            raise FilterError(f"expected a property name but found {token.text or 'the end'!r}")
        return token.text

    def _literal(self) -> Any:
        token = self._take()
        if token.kind == "string":
            return token.text
        if token.kind == "number":
            return float(token.text) if "." in token.text else int(token.text)
        if token.kind == "word" and token.text in ("true", "false", "null"):
            return {"true": True, "false": False, "null": None}[token.text]
        raise FilterError(f"expected a value but found {token.text or 'the end'!r}")


def _value_at(item: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = item
    for part in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _compare(compare: Callable[[Any, Any], bool], operator: str, found: Any, value: Any) -> bool:
    if operator in ("eq", "ne"):
        return compare(found, value)
    if found is None or value is None or isinstance(found, str) != isinstance(value, str):
        return False  # ordering across types, or against null, matches nothing
    return compare(found, value)
