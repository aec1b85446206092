"""YAML that remembers where each value came from.

Config and policy files are parsed once, at the edge, into frozen dataclasses;
every problem found on the way is reported as ``file:line: message`` so an
operator can jump straight to it.  PyYAML's safe loader silently keeps the last
of duplicate keys; here a duplicate key is an error, because in a security
policy the first definition an operator reads must not be quietly overridden.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from proxy.errors import LabgateError
from proxy.reasons import Reason


class LocatedDict(dict[str, Any]):
    """A mapping that knows the line of itself and of each of its keys."""

    line: int = 0
    key_lines: dict[str, int]


class LocatedList(list[Any]):
    """A sequence that knows the line of itself and of each item."""

    line: int = 0
    item_lines: list[int]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a file, at a line (1-based)."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class ConfigError(LabgateError):
    """Raised when a file has problems; carries every one of them."""

    reason = Reason.CONFIG_PROBLEM

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("\n".join(str(p) for p in problems))
        self.problems = problems


@dataclass
class Problems:
    """Collects problems so one run of ``labgate check`` reports all of them."""

    items: list[Problem] = field(default_factory=list)

    def add(self, file: str, line: int, message: str) -> None:
        self.items.append(Problem(file, line, message))

    def __bool__(self) -> bool:
        return bool(self.items)

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.items)

    def raise_if_any(self) -> None:
        if self.items:
            raise ConfigError(list(self.items))


class _LocatingLoader(yaml.SafeLoader):
    """SafeLoader building LocatedDict/LocatedList and refusing duplicate keys."""


def _construct_mapping(loader: _LocatingLoader, node: yaml.MappingNode) -> LocatedDict:
    loader.flatten_mapping(node)
    result = LocatedDict()
    result.line = node.start_mark.line + 1
    result.key_lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} must be a string", key_node.start_mark
            )
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = line
    return result


def _construct_sequence(loader: _LocatingLoader, node: yaml.SequenceNode) -> LocatedList:
    result = LocatedList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


_LocatingLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LocatingLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_yaml_text(text: str, file: str) -> Any:
    """Parse YAML text; syntax errors become a ConfigError at the right line."""
    try:
        return yaml.load(text, Loader=_LocatingLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        message = exc.problem or str(exc)
        raise ConfigError([Problem(file, line, f"invalid YAML: {message}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, 1, f"invalid YAML: {exc}")]) from None


def load_yaml_file(path: Path) -> Any:
    """Read and parse one YAML file, naming it in every error."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(str(path), 1, f"cannot read file: {exc}")]) from None
    return load_yaml_text(text, str(path))


def line_of(container: Any, key: str | int | None = None) -> int:
    """The line of ``container[key]`` (or of the container itself), 1 if unknown."""
    if isinstance(container, LocatedDict):
        if isinstance(key, str) and key in container.key_lines:
            return container.key_lines[key]
        return container.line or 1
    if isinstance(container, LocatedList):
        if isinstance(key, int) and 0 <= key < len(container.item_lines):
            return container.item_lines[key]
        return container.line or 1
    return 1


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(value: Any) -> float:
    """``30s``, ``10m``, ``24h``, ``90d`` or a number of seconds; must be positive."""
    if isinstance(value, bool):
        raise ValueError("a duration must be a number of seconds or like 10m, 24h, 90d")
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and len(value) >= 2 and value[-1] in _DURATION_UNITS:
        number = value[:-1]
        if not number.isascii() or not number.isdigit():
            raise ValueError(f"bad duration {value!r}: use a whole number and s, m, h or d")
        seconds = float(int(number) * _DURATION_UNITS[value[-1]])
    else:
        raise ValueError(f"bad duration {value!r}: use a number of seconds or like 10m, 24h, 90d")
    if seconds <= 0:
        raise ValueError(f"duration {value!r} must be positive")
    return seconds


@dataclass
class FieldReader:
    """Typed access to located YAML with every mistake recorded, not raised.

    Loaders read a whole file through one reader, then call
    ``problems.raise_if_any()``: the operator sees every problem at once.
    """

    file: str
    problems: Problems

    def error(self, container: Any, key: str | int | None, message: str) -> None:
        self.problems.add(self.file, line_of(container, key), message)

    def expect_keys(self, mapping: LocatedDict, allowed: Iterable[str], what: str) -> None:
        known = set(allowed)
        for key in mapping:
            if key not in known:
                choices = ", ".join(sorted(known))
                self.error(mapping, key, f"unknown key {key!r} in {what} (known: {choices})")

    def given(self, mapping: LocatedDict, key: str, *, required: bool) -> bool:
        """Whether ``key`` has a value; a missing required key is reported."""
        if key in mapping and mapping[key] is not None:
            return True
        if required:
            self.error(mapping, None, f"missing required key {key!r}")
        return False

    def section(self, mapping: LocatedDict, key: str, *, required: bool = False) -> LocatedDict | None:
        if not self.given(mapping, key, required=required):
            return None
        value = mapping[key]
        if not isinstance(value, LocatedDict):
            self.error(mapping, key, f"{key!r} must be a mapping, not {_kind(value)}")
            return None
        return value

    def items(self, mapping: LocatedDict, key: str, *, required: bool = False) -> LocatedList | None:
        if not self.given(mapping, key, required=required):
            return None
        value = mapping[key]
        if not isinstance(value, LocatedList):
            self.error(mapping, key, f"{key!r} must be a list, not {_kind(value)}")
            return None
        return value

    def string(
        self, mapping: LocatedDict, key: str, *, required: bool = False, default: str | None = None
    ) -> str | None:
        if not self.given(mapping, key, required=required):
            return default
        value = mapping[key]
        if not isinstance(value, str) or not value:
            self.error(mapping, key, f"{key!r} must be a non-empty string, not {_kind(value)}")
            return default
        return value

    def choice(self, mapping: LocatedDict, key: str, choices: Iterable[str], *, default: str) -> str:
        allowed = tuple(choices)
        value = self.string(mapping, key, default=default)
        if value not in allowed:
            self.error(mapping, key, f"{key!r} must be one of {', '.join(allowed)}, not {value!r}")
            return default
        return value

    def number(
        self, mapping: LocatedDict, key: str, *, default: float, minimum: float | None = None
    ) -> float:
        return float(self._bounded(mapping, key, (int, float), "a number", default, minimum))

    def integer(
        self, mapping: LocatedDict, key: str, *, default: int, minimum: int | None = None
    ) -> int:
        return int(self._bounded(mapping, key, (int,), "an integer", default, minimum))

    def _bounded(
        self,
        mapping: LocatedDict,
        key: str,
        kinds: tuple[type[int] | type[float], ...],
        what: str,
        default: float,
        minimum: float | None,
    ) -> float:
        """A number of ``kinds`` (never a boolean) at least ``minimum``, or ``default`` with the problem reported."""
        if not self.given(mapping, key, required=False):
            return default
        value = mapping[key]
        if isinstance(value, bool) or not isinstance(value, kinds):
            self.error(mapping, key, f"{key!r} must be {what}, not {_kind(value)}")
            return default
        if minimum is not None and value < minimum:
            self.error(mapping, key, f"{key!r} must be at least {minimum}, not {value}")
            return default
        return value

    def boolean(self, mapping: LocatedDict, key: str, *, default: bool) -> bool:
        if not self.given(mapping, key, required=False):
            return default
        value = mapping[key]
        if not isinstance(value, bool):
            self.error(mapping, key, f"{key!r} must be true or false, not {_kind(value)}")
            return default
        return value

    def duration(self, mapping: LocatedDict, key: str) -> float | None:
        if not self.given(mapping, key, required=False):
            return None
        try:
            return parse_duration(mapping[key])
        except ValueError as exc:
            self.error(mapping, key, str(exc))
            return None

    def strings(self, mapping: LocatedDict, key: str) -> list[tuple[str, int]]:
        """A list of non-empty strings, each with its line; bad items are reported."""
        items = self.items(mapping, key)
        if items is None:
            return []
        result: list[tuple[str, int]] = []
        for index, item in enumerate(items):
            if not isinstance(item, str) or not item.strip():
                self.error(items, index, f"items of {key!r} must be non-empty strings, not {_kind(item)}")
                continue
            result.append((item, line_of(items, index)))
        return result


def _kind(value: Any) -> str:
    """How an operator would name a YAML value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return f"a number ({value})"
    if isinstance(value, str):
        return f"a string ({value!r})" if value else "an empty string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return type(value).__name__


def read_secret(reader: FieldReader, section: LocatedDict, base: Path, name: str, *, required: bool) -> str | None:
    """``<name>_file`` or ``<name>_env`` (exactly one when required, at most one otherwise).

    A file's surrounding whitespace (its final newline) is dropped; an empty
    secret is refused.  Errors name the file or variable, never its content.
    """
    given = [key for key in (f"{name}_file", f"{name}_env") if key in section]
    if len(given) > 1 or (required and not given):
        how_many = "exactly" if required else "at most"
        reader.error(section, given[1] if len(given) > 1 else None, f"give {how_many} one of {name}_file, {name}_env")
        return None
    if not given:
        return None
    key = given[0]
    value = reader.string(section, key, required=True)
    if value is None:
        return None
    if key.endswith("_env"):
        secret = os.environ.get(value, "").strip()
        if not secret:
            reader.error(section, key, f"environment variable {value!r} is not set or empty")
        return secret or None
    path = (base / os.path.expanduser(value)).resolve()
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reader.error(section, key, f"cannot read {value!r}: {getattr(exc, 'strerror', None) or 'not UTF-8 text'}")
        return None
    if not secret:
        reader.error(section, key, f"{value!r} is empty")
    return secret or None
