"""Read an upstream's ``token_source`` section into the source's settings.

Only the ``jwt`` source exists so far; the section's ``type`` key names the
source so that others can join without changing the config shape.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from proxy.policy.compile import CompiledPack
from proxy.tokens.jwks import ALGORITHM_FAMILIES, VerificationKey, load_static_key
from proxy.tokens.jwt_source import JwtSourceSettings
from proxy.tokens.matchers import TypeRule, compile_conditions
from proxy.yamlsource import FieldReader, LocatedDict

SOURCE_TYPES = ("jwt",)
JWT_KEYS = (
    "type", "algorithms", "keys", "jwks_url", "jwks_min_refetch_interval", "jwks_max_age", "issuer",
    "audience", "leeway", "required_claims", "typ", "subject_claim", "path_prefixes_claim",
    "client_ips_claim", "types", "cache",
)
KEY_KEYS = ("kid", "algorithm", "secret_file", "secret_env", "public_key_file")


def read_token_source(
    reader: FieldReader, upstream: LocatedDict, base: Path, pack: CompiledPack | None
) -> JwtSourceSettings | None:
    section = reader.section(upstream, "token_source", required=True)
    if section is None:
        return None
    kind = reader.choice(section, "type", SOURCE_TYPES, default="jwt")
    if "type" not in section:
        reader.error(section, None, f"token_source needs 'type' (one of {', '.join(SOURCE_TYPES)})")
    if kind == "jwt":
        return _read_jwt(reader, section, base, pack)
    return None


def _read_jwt(reader: FieldReader, section: LocatedDict, base: Path, pack: CompiledPack | None) -> JwtSourceSettings | None:
    reader.expect_keys(section, JWT_KEYS, "a jwt token_source")
    problems_before = len(reader.problems.items)
    algorithms = tuple(text for text, _ in reader.strings(section, "algorithms"))
    if not algorithms:
        reader.error(section, "algorithms", "pin at least one algorithm, e.g. algorithms: [RS256]")
    for index, alg in enumerate(algorithms):
        if alg not in ALGORITHM_FAMILIES:
            known = ", ".join(sorted(ALGORITHM_FAMILIES))
            reader.error(section.get("algorithms"), index, f"algorithm {alg!r} is not supported (known: {known})")
    keys = _read_keys(reader, section, base)
    audience = section.get("audience")
    if isinstance(audience, str):
        audiences: tuple[str, ...] = (audience,)
    else:
        audiences = tuple(text for text, _ in reader.strings(section, "audience"))
    cache = reader.section(section, "cache")
    if cache is not None:
        reader.expect_keys(cache, ("size", "max_seconds"), "token_source.cache")
    rules = _read_type_rules(reader, section, pack)
    if len(reader.problems.items) > problems_before:
        return None
    try:
        return JwtSourceSettings(
            algorithms=algorithms,
            static_keys=keys,
            jwks_url=reader.string(section, "jwks_url"),
            jwks_min_refetch_interval=reader.number(section, "jwks_min_refetch_interval", default=30.0, minimum=0.0),
            jwks_max_age=reader.number(section, "jwks_max_age", default=300.0, minimum=1.0),
            issuer=reader.string(section, "issuer"),
            audience=audiences,
            leeway=reader.number(section, "leeway", default=30.0, minimum=0.0),
            required_claims=tuple(text for text, _ in reader.strings(section, "required_claims")),
            expected_typ=reader.string(section, "typ"),
            type_rules=rules,
            subject_claim=reader.string(section, "subject_claim", default="sub") or "sub",
            path_prefixes_claim=reader.string(section, "path_prefixes_claim"),
            client_ips_claim=reader.string(section, "client_ips_claim"),
            cache_size=reader.integer(cache, "size", default=10000, minimum=1) if cache else 10000,
            cache_max_seconds=reader.number(cache, "max_seconds", default=300.0, minimum=0.0) if cache else 300.0,
        )
    except ValueError as exc:
        reader.error(section, None, f"token_source: {exc}")
        return None


def _read_keys(reader: FieldReader, section: LocatedDict, base: Path) -> tuple[VerificationKey, ...]:
    items = reader.items(section, "keys")
    if items is None:
        return ()
    keys: list[VerificationKey] = []
    for index, body in enumerate(items):
        if not isinstance(body, LocatedDict):
            reader.error(items, index, "each key must be a mapping with 'algorithm' and one key material")
            continue
        reader.expect_keys(body, KEY_KEYS, "a key")
        algorithm = reader.string(body, "algorithm", required=True)
        material = _read_key_material(reader, body, base)
        if algorithm is None or material is None:
            continue
        try:
            keys.append(load_static_key(kid=reader.string(body, "kid"), algorithm=algorithm, material=material))
        except ValueError as exc:
            reader.error(items, index, str(exc))
    return tuple(keys)


def _read_key_material(reader: FieldReader, body: LocatedDict, base: Path) -> bytes | None:
    """Exactly one of secret_file, secret_env, public_key_file; secrets never sit in the config."""
    given = [k for k in ("secret_file", "secret_env", "public_key_file") if k in body]
    if len(given) != 1:
        reader.error(body, None, "a key needs exactly one of secret_file, secret_env, public_key_file")
        return None
    key = given[0]
    value = reader.string(body, key, required=True)
    if value is None:
        return None
    if key == "secret_env":
        secret = os.environ.get(value)
        if not secret:
            reader.error(body, key, f"environment variable {value!r} is not set or empty")
            return None
        return secret.encode()
    path = (base / os.path.expanduser(value)).resolve()
    try:
        data = path.read_bytes()
    except OSError as exc:
        reader.error(body, key, f"cannot read {value!r}: {exc.strerror}")
        return None
    return data.strip() if key == "secret_file" else data


def _read_type_rules(reader: FieldReader, section: LocatedDict, pack: CompiledPack | None) -> tuple[TypeRule, ...]:
    items = reader.items(section, "types", required=True)
    if items is None:
        return ()
    if not items:
        reader.error(section, "types", "map claims to at least one token type")
    rules: list[TypeRule] = []
    for index, body in enumerate(items):
        if not isinstance(body, LocatedDict):
            reader.error(items, index, "each entry of 'types' needs 'token_type' and optionally 'match'")
            continue
        reader.expect_keys(body, ("token_type", "match"), "a types entry")
        name = reader.string(body, "token_type", required=True)
        if name and pack is not None and name not in pack.token_types:
            known = ", ".join(sorted(pack.token_types))
            reader.error(body, "token_type", f"unknown token type {name!r} in pack {pack.name!r} (known: {known})")
        match: Any = body.get("match") or {}
        if not isinstance(match, dict):
            reader.error(body, "match", "'match' must be a mapping of claim -> condition")
            continue
        try:
            conditions = compile_conditions(match)
        except ValueError as exc:
            reader.error(body, "match", str(exc))
            continue
        if name:
            rules.append(TypeRule(name, conditions))
    return tuple(rules)
