"""Counts in messages read as sentences: ``1 upstream``, ``2 upstreams``."""

from __future__ import annotations


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``count`` and ``noun``, in the plural unless the count is one (``many`` for irregular plurals)."""
    return f"{count} {noun}" if count == 1 else f"{count} {many or noun + 's'}"
