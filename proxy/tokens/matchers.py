"""Claim matchers: which token type a verified token is.

A source lists ``types`` in order; the first whose conditions all hold wins.
Conditions compare claims strictly: ``true`` never equals ``1``, and a
``contains`` on an OAuth ``scope`` string matches whole words only, so
``scope: "admin-lite"`` does not contain ``admin``.  ``equals_any_case`` and
``in_any_case`` compare ASCII text in any letter case, for names an appliance
itself reads case-insensitively (HCP's realm: ``Local``, ``local``, ``LOCAL``);
non-ASCII text never matches them (``"ſ".upper() == "S"`` must not pick a type).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_MISSING = object()
_OPERATORS = ("equals", "contains", "in", "present", "equals_any_case", "in_any_case")
_SCALARS = (str, int, float, bool)


def claim_at(claims: Mapping[str, Any], path: str) -> Any:
    """The claim at a dotted path (``realm_access.roles``), or a private sentinel when absent.

    A claim whose own name contains dots is found first, as written.
    """
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def same(a: Any, b: Any) -> bool:
    """Equality that does not let ``True == 1`` or ``1 == 1.0`` pick a token type."""
    return type(a) is type(b) and a == b


@dataclass(frozen=True)
class Condition:
    """One claim test: ``operator`` is one of equals, contains, in, present."""

    claim: str
    operator: str
    value: Any

    def holds(self, claims: Mapping[str, Any]) -> bool:
        found = claim_at(claims, self.claim)
        if self.operator == "present":
            return (found is not _MISSING) is self.value
        if found is _MISSING:
            return False
        if self.operator == "equals":
            return same(found, self.value)
        if self.operator == "in":
            return any(same(found, option) for option in self.value)
        if self.operator in ("equals_any_case", "in_any_case"):
            options = self.value if self.operator == "in_any_case" else (self.value,)
            return isinstance(found, str) and found.isascii() and found.lower() in options
        # contains: a list claim, or a space-separated string (RFC 6749 section 3.3 scope)
        if isinstance(found, str):
            return isinstance(self.value, str) and self.value in found.split(" ")
        if isinstance(found, list):
            return any(same(item, self.value) for item in found)
        return False


def compile_conditions(match: Mapping[str, Any]) -> tuple[Condition, ...]:
    """Turn a ``match`` mapping into conditions; ValueError says what is wrong."""
    conditions: list[Condition] = []
    for claim, spec in match.items():
        if not isinstance(claim, str) or not claim or any(not part for part in claim.split(".")):
            raise ValueError(f"claim name {claim!r} must be a name or a dotted path like realm_access.roles")
        conditions.append(_condition(claim, spec))
    return tuple(conditions)


def _condition(claim: str, spec: Any) -> Condition:
    if isinstance(spec, _SCALARS):
        return Condition(claim, "equals", spec)
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise ValueError(
            f"claim {claim!r}: give a value, or exactly one of {', '.join(_OPERATORS)} (e.g. {{contains: admin}})"
        )
    ((operator, value),) = spec.items()
    if operator not in _OPERATORS:
        raise ValueError(f"claim {claim!r}: unknown condition {operator!r} (known: {', '.join(_OPERATORS)})")
    if operator == "present":
        if not isinstance(value, bool):
            raise ValueError(f"claim {claim!r}: present takes true or false")
    elif operator == "in":
        if not isinstance(value, list) or not value or not all(isinstance(v, _SCALARS) for v in value):
            raise ValueError(f"claim {claim!r}: in takes a non-empty list of values")
        value = tuple(value)
    elif operator in ("equals_any_case", "in_any_case"):
        texts = value if operator == "in_any_case" and isinstance(value, list) else [value]
        ascii_texts = all(isinstance(v, str) and v.isascii() for v in texts)
        if not texts or not ascii_texts or (operator == "in_any_case") != isinstance(value, list):
            what = "a non-empty list of ASCII texts" if operator == "in_any_case" else "one ASCII text"
            raise ValueError(f"claim {claim!r}: {operator} takes {what}")
        folded = tuple(v.lower() for v in texts)
        value = folded if operator == "in_any_case" else folded[0]
    elif not isinstance(value, _SCALARS):
        raise ValueError(f"claim {claim!r}: {operator} takes a single value")
    return Condition(claim, operator, value)


@dataclass(frozen=True)
class TypeRule:
    """A token type and the conditions a token's claims must meet to be of it."""

    token_type: str
    conditions: tuple[Condition, ...]

    def matches(self, claims: Mapping[str, Any]) -> bool:
        return all(condition.holds(claims) for condition in self.conditions)


def pick_token_type(rules: Sequence[TypeRule], claims: Mapping[str, Any]) -> str | None:
    """The first rule that matches wins; no match means no type (a 401, never a default)."""
    for rule in rules:
        if rule.matches(claims):
            return rule.token_type
    return None
