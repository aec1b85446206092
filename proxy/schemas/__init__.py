"""JSON Schemas (draft 2020-12) of the config file and of policy packs, for editors.

``labgate schema config|pack`` prints them; ``docs/schema/`` ships the same
files, which the shipped YAML names in a ``# yaml-language-server: $schema=``
line so editors complete keys and flag mistakes as one types. A schema sees
shapes only; ``labgate check`` stays the judge of everything else (files,
packs, token types, route templates), with ``file:line`` messages. A test keeps
both schemas in step with the keys the readers accept.
"""

from __future__ import annotations

from importlib.resources import files

SCHEMAS = ("config", "pack")


def schema_text(name: str) -> str:
    """The schema's JSON text, exactly as shipped in docs/schema/."""
    if name not in SCHEMAS:
        raise ValueError(f"no schema {name!r} (known: {', '.join(SCHEMAS)})")
    return (files(__package__) / f"{name}.schema.json").read_text(encoding="utf-8")
