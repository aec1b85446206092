"""Read an upstream's ``token_source`` section into the source's settings.

The section's ``type`` names the source: ``jwt`` (signed tokens verified with
pinned keys), ``observe`` (opaque tokens learned from the appliance's own token
endpoint), ``introspect`` (opaque tokens an RFC 7662 endpoint vouches for) or
``issuer`` (labgate's own tokens, verified with its key ring).
Secrets come from files or environment variables, never from the config text.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from proxy.issuer.emergency_clients import read_emergency_clients
from proxy.issuer.grants import read_grants
from proxy.issuer.service_accounts import read_service_accounts
from proxy.issuer.settings import IssuerSettings
from proxy.policy.compile import CompiledPack
from proxy.policy.model import RouteTemplate
from proxy.tokens.introspect import IntrospectSourceSettings
from proxy.tokens.issuer_source import IssuerSourceSettings
from proxy.tokens.jwt_source import DEFAULT_MAX_TOKEN_BYTES, JwtSourceSettings
from proxy.tokens.matchers import TypeRule, compile_conditions
from proxy.tokens.observe import (
    GRANT_FIELDS,
    ObserveSourceSettings,
    token_endpoint_segments,
)
from proxy.verification_keys import ALGORITHM_FAMILIES, VerificationKey, load_static_key
from proxy.yamlsource import FieldReader, LocatedDict, read_secret

TokenSourceSettings = JwtSourceSettings | ObserveSourceSettings | IntrospectSourceSettings | IssuerSourceSettings

SOURCE_TYPES = ("jwt", "observe", "introspect", "issuer")
JWT_KEYS = (
    "type", "algorithms", "keys", "jwks_url", "jwks_min_refetch_interval", "jwks_max_age", "issuer",
    "audience", "leeway", "required_claims", "typ", "subject_claim", "path_prefixes_claim",
    "client_ips_claim", "types", "cache", "max_token_bytes",
)
KEY_KEYS = ("kid", "algorithm", "secret_file", "secret_env", "public_key_file")
OBSERVE_KEYS = ("type", "token_endpoint", "revoke_endpoint", "max_lifetime", "refresh_lifetime", "types", "cache")
INTROSPECT_KEYS = (
    "type", "endpoint", "client_id", "client_secret_file", "client_secret_env", "client_auth", "timeout", "tls",
    "subject_claim", "path_prefixes_claim", "client_ips_claim", "types", "cache",
)
ISSUER_SOURCE_KEYS = (
    "type", "audience", "token_types", "cache", "grants", "emergency_clients", "service_accounts", "max_token_bytes",
)


def read_token_source(
    reader: FieldReader, upstream: LocatedDict, base: Path, pack: CompiledPack | None, issuer: IssuerSettings | None = None
) -> TokenSourceSettings | None:
    """``issuer``: the config's ``issuer`` section, which an ``issuer`` source verifies against."""
    section = reader.section(upstream, "token_source", required=True)
    if section is None:
        return None
    kind = reader.choice(section, "type", SOURCE_TYPES, default="jwt")
    if "type" not in section:
        reader.error(section, None, f"token_source needs 'type' (one of {', '.join(SOURCE_TYPES)})")
    if kind == "observe":
        return _read_observe(reader, section, pack)
    if kind == "introspect":
        return _read_introspect(reader, section, base, pack)
    if kind == "issuer":
        return _read_issuer_source(reader, section, upstream, pack, issuer)
    return _read_jwt(reader, section, base, pack)


def _read_observe(reader: FieldReader, section: LocatedDict, pack: CompiledPack | None) -> ObserveSourceSettings | None:
    reader.expect_keys(section, OBSERVE_KEYS, "an observe token_source")
    problems_before = len(reader.problems.items)
    endpoint = reader.string(section, "token_endpoint", required=True)
    if endpoint is not None:
        try:
            token_endpoint_segments(endpoint)
        except ValueError as exc:
            reader.error(section, "token_endpoint", str(exc))
    revoke = None
    revoke_text = reader.string(section, "revoke_endpoint")
    if revoke_text is not None:
        try:
            revoke = RouteTemplate.parse(revoke_text)
        except ValueError as exc:
            reader.error(section, "revoke_endpoint", f"revoke_endpoint: {exc}")
        if revoke is not None and None in revoke.segments:
            reader.error(section, "revoke_endpoint", "revoke_endpoint is one exact path, without {params}")
    rules = _read_type_rules(reader, section, pack, fields=GRANT_FIELDS)
    cache = _read_cache(reader, section, ("size", "max_seconds"))
    max_lifetime = reader.duration(section, "max_lifetime")
    refresh_lifetime = reader.duration(section, "refresh_lifetime")
    if len(reader.problems.items) > problems_before or endpoint is None:
        return None
    try:
        return ObserveSourceSettings(
            token_endpoint=endpoint,
            type_rules=rules,
            revoke_endpoint=revoke,
            max_lifetime=max_lifetime if max_lifetime is not None else 86400.0,
            refresh_lifetime=refresh_lifetime if refresh_lifetime is not None else 90 * 86400.0,
            cache_size=reader.integer(cache, "size", default=10000, minimum=1) if cache else 10000,
            cache_max_seconds=reader.number(cache, "max_seconds", default=60.0, minimum=0.0) if cache else 60.0,
        )
    except ValueError as exc:
        reader.error(section, None, f"token_source: {exc}")
        return None


def _read_introspect(
    reader: FieldReader, section: LocatedDict, base: Path, pack: CompiledPack | None
) -> IntrospectSourceSettings | None:
    reader.expect_keys(section, INTROSPECT_KEYS, "an introspect token_source")
    problems_before = len(reader.problems.items)
    endpoint = reader.string(section, "endpoint", required=True)
    client_id = reader.string(section, "client_id", required=True)
    secret = read_secret(reader, section, base, "client_secret", required=True)
    client_auth = reader.choice(section, "client_auth", ("basic", "post"), default="basic")
    tls = reader.section(section, "tls")
    ca_file = None
    if tls is not None:
        reader.expect_keys(tls, ("verify", "ca_file"), "token_source.tls")
        ca_text = reader.string(tls, "ca_file")
        if ca_text is not None:
            ca_file = (base / os.path.expanduser(ca_text)).resolve()
            if not ca_file.is_file():
                reader.error(tls, "ca_file", f"ca_file: file {ca_text!r} does not exist (looked at {ca_file})")
    rules = _read_type_rules(reader, section, pack)
    cache = _read_cache(reader, section, ("size", "max_seconds", "negative_seconds"))
    if len(reader.problems.items) > problems_before or not (endpoint and client_id and secret):
        return None
    try:
        return IntrospectSourceSettings(
            endpoint=endpoint,
            client_id=client_id,
            client_secret=secret,
            type_rules=rules,
            client_auth="post" if client_auth == "post" else "basic",
            subject_claim=reader.string(section, "subject_claim", default="sub") or "sub",
            path_prefixes_claim=reader.string(section, "path_prefixes_claim"),
            client_ips_claim=reader.string(section, "client_ips_claim"),
            timeout=reader.number(section, "timeout", default=5.0, minimum=0.1),
            verify_tls=reader.boolean(tls, "verify", default=True) if tls else True,
            ca_file=ca_file,
            cache_size=reader.integer(cache, "size", default=10000, minimum=1) if cache else 10000,
            cache_max_seconds=reader.number(cache, "max_seconds", default=60.0, minimum=0.0) if cache else 60.0,
            cache_negative_seconds=reader.number(cache, "negative_seconds", default=5.0, minimum=0.0) if cache else 5.0,
        )
    except ValueError as exc:
        reader.error(section, None, f"token_source: {exc}")
        return None


def _read_issuer_source(
    reader: FieldReader, section: LocatedDict, upstream: LocatedDict, pack: CompiledPack | None, issuer: IssuerSettings | None
) -> IssuerSourceSettings | None:
    """Audience: the upstream's name unless given; token types: every type of its pack unless listed."""
    reader.expect_keys(section, ISSUER_SOURCE_KEYS, "an issuer token_source")
    problems_before = len(reader.problems.items)
    if issuer is None:
        reader.error(section, "type", "an issuer token_source verifies labgate's own tokens: it needs a valid top-level 'issuer' section")
    audience = section.get("audience")
    if isinstance(audience, str):
        audiences: tuple[str, ...] = (audience,)
    elif audience is None:
        name = upstream.get("name")
        audiences = (name,) if isinstance(name, str) and name else ()
    else:
        audiences = tuple(text for text, _ in reader.strings(section, "audience"))
        if not audiences:
            reader.error(section, "audience", "audience: give the upstream's audience (default: its name)")
    listed = reader.strings(section, "token_types")
    if "token_types" in section and not listed:
        reader.error(section, "token_types", "token_types: list the pack's types this upstream accepts, or leave it out")
    known = tuple(pack.token_types) if pack is not None else ()
    for text, line in listed:
        if pack is not None and text not in pack.token_types:
            reader.problems.add(reader.file, line, f"unknown token type {text!r} in pack {pack.name!r} (known: {', '.join(sorted(known))})")
    token_types = tuple(text for text, _ in listed) or known
    cache = _read_cache(reader, section, ("size",))
    cache_size = reader.integer(cache, "size", default=10000, minimum=1) if cache else 10000
    grants = read_grants(reader, section, pack, token_types)
    emergency = read_emergency_clients(reader, section, pack, token_types)
    service_accounts = read_service_accounts(reader, section, pack, token_types)
    if issuer is None or not audiences or not token_types or len(reader.problems.items) > problems_before:
        return None
    return IssuerSourceSettings(
        issuer=issuer, audience=audiences, token_types=token_types, cache_size=cache_size, grants=grants,
        emergency_clients=emergency, service_accounts=service_accounts,
        max_token_bytes=reader.integer(section, "max_token_bytes", default=DEFAULT_MAX_TOKEN_BYTES, minimum=256),
    )


def _read_cache(reader: FieldReader, section: LocatedDict, keys: tuple[str, ...]) -> LocatedDict | None:
    cache = reader.section(section, "cache")
    if cache is not None:
        reader.expect_keys(cache, keys, "token_source.cache")
    return cache


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
    cache = _read_cache(reader, section, ("size", "max_seconds"))
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
            max_token_bytes=reader.integer(section, "max_token_bytes", default=DEFAULT_MAX_TOKEN_BYTES, minimum=256),
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


def _read_type_rules(
    reader: FieldReader, section: LocatedDict, pack: CompiledPack | None, *, fields: tuple[str, ...] | None = None
) -> tuple[TypeRule, ...]:
    """``types``: token type + conditions; ``fields`` limits what conditions may look at."""
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
        unknown = [c.claim for c in conditions if fields is not None and c.claim not in fields]
        if unknown:
            reader.error(body, "match", f"a grant can be matched on {', '.join(fields or ())} only, not {unknown[0]!r}")
            continue
        if name:
            rules.append(TypeRule(name, conditions))
    return tuple(rules)
