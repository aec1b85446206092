"""JSON read one way only: a name given twice is refused, never resolved to its last value.

RFC 8259 section 4 calls the meaning of duplicate names unpredictable; two
parsers reading different values (an issuer's ``role`` against labgate's, an
administrator's field against a handler's) is the attack.
"""

from __future__ import annotations

from typing import Any


def no_duplicate_names(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads(..., object_pairs_hook=no_duplicate_names)``: ValueError on a name given twice."""
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError("duplicate name")
        result[name] = value
    return result
