"""Emergency clients (VCF-style): what one is, how its token's type is chosen, and how the API shows it.

A VCF Operations emergency client (VCF Operations "Create Emergency Client" reference) is a named principal with one
bearer token, made for "critical access scenarios": created with a lifetime
in minutes (``accessTokenTtl``) and roles, its token is shown once; reading or
listing the client never shows the token again; regenerating replaces the
token (the old one dies); deleting the client kills its token.  The API keeps
VCF's field names (``clientId``, ``accessTokenExpirationDate`` in epoch
milliseconds, ``accessTokenStatus`` ACTIVE / EXPIRED / UNKNOWN, ...).

Roles narrow the token.  A token maps to exactly one pack type, so the
upstream's ``token_source.emergency_clients`` lists roles with the type each
one yields, narrowest first: the first listed role the client holds decides,
and a client holding none of them gets ``token_type``, the ceiling (the vcf
pack's convention: ``emergency-client-viewer``, ``emergency-client-iam``,
then ``emergency-client``).  The type is chosen again at every regenerate,
so a changed mapping applies to the next token.

This module holds no I/O: :mod:`proxy.issuer.emergency_client_api` serves it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from proxy.errors import LabgateError
from proxy.issuer.records import NAME, MalformedRecord
from proxy.issuer.settings import IssuerSettings
from proxy.policy.compile import CompiledPack
from proxy.reasons import Reason
from proxy.yamlsource import FieldReader, LocatedDict

RECORD_KIND = "emergency-client"
EMERGENCY_CLIENTS_KEYS = ("token_type", "roles")
ROLE_KEYS = ("role", "token_type")
# clientId is the record key and a path segment of the API: a name as the management API's paths take them.
CLIENT_ID_SHAPE = NAME
MAX_NAME = 256
MAX_DESCRIPTION = 2048
MAX_ROLES = 64
MAX_ROLE_NAME = 128
CREATE_FIELDS = ("clientId", "clientName", "clientDescription", "accessTokenTtl", "roles")
# Fields labgate sets itself: a client sending them back (a copied record) is told so.
SERVER_FIELDS = ("accessToken", "accessTokenExpirationDate", "accessTokenStatus", "tokenEndpointUrl", "oidcIssuerUrl")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


# -- configuration: token_source.emergency_clients -------------------------------------


@dataclass(frozen=True)
class RoleType:
    """A client holding ``role`` gets ``token_type`` (unless an earlier listed role decided)."""

    role: str
    token_type: str


@dataclass(frozen=True)
class EmergencyClientTypes:
    """Which token type an emergency client's token gets, by its roles."""

    token_type: str
    roles: tuple[RoleType, ...] = ()

    def token_type_for(self, roles: Iterable[str]) -> str:
        """The first listed role the client holds, else the ceiling."""
        held = set(roles)
        return next((r.token_type for r in self.roles if r.role in held), self.token_type)

    @property
    def token_types(self) -> tuple[str, ...]:
        return (self.token_type, *(r.token_type for r in self.roles))


def read_emergency_clients(
    reader: FieldReader, source: LocatedDict, pack: CompiledPack | None, accepted: tuple[str, ...]
) -> EmergencyClientTypes | None:
    """``emergency_clients: {token_type, roles: [{role, token_type}]}``; None when absent or wrong (reported).

    ``accepted``: the types the upstream's source accepts; an emergency
    client's token must be one of them.
    """
    section = reader.section(source, "emergency_clients")
    if section is None:
        return None
    reader.expect_keys(section, EMERGENCY_CLIENTS_KEYS, "emergency_clients")
    problems_before = len(reader.problems.items)
    ceiling = reader.string(section, "token_type", required=True)
    if ceiling is not None:
        _check_type(reader, section, "token_type", ceiling, pack, accepted)
    roles: list[RoleType] = []
    items = reader.items(section, "roles")
    seen: set[str] = set()
    for index, body in enumerate(items or ()):
        if not isinstance(body, LocatedDict):
            reader.error(items, index, "each entry of 'roles' needs 'role' and 'token_type'")
            continue
        reader.expect_keys(body, ROLE_KEYS, "a roles entry")
        role = reader.string(body, "role", required=True)
        token_type = reader.string(body, "token_type", required=True)
        if role is not None and role in seen:
            reader.error(body, "role", f"role {role!r} is listed twice: the first entry would always decide")
        if token_type is not None:
            _check_type(reader, body, "token_type", token_type, pack, accepted)
        if role is not None and token_type is not None:
            seen.add(role)
            roles.append(RoleType(role, token_type))
    if ceiling is None or len(reader.problems.items) > problems_before:
        return None
    return EmergencyClientTypes(ceiling, tuple(roles))


def _check_type(
    reader: FieldReader, where: LocatedDict, key: str, name: str, pack: CompiledPack | None, accepted: tuple[str, ...]
) -> None:
    if pack is not None and name not in pack.token_types:
        known = ", ".join(sorted(pack.token_types))
        reader.error(where, key, f"unknown token type {name!r} in pack {pack.name!r} (known: {known})")
    elif pack is not None and name not in accepted:
        reader.error(where, key, f"token type {name!r} is not among this upstream's token_types")


# -- the API's input ---------------------------------------------------------------------


class EmergencyClientProblem(LabgateError, ValueError):
    """A create request labgate refuses; the message says what to send instead, never echoes a secret."""

    reason = Reason.BAD_ADMIN_REQUEST


@dataclass(frozen=True)
class NewEmergencyClient:
    """A create request, checked."""

    client_id: str
    client_name: str
    client_description: str | None
    ttl_minutes: int
    roles: tuple[str, ...]


def max_ttl_minutes(issuer: IssuerSettings, pack: CompiledPack, token_types: Iterable[str]) -> int:
    """The longest ``accessTokenTtl`` labgate can honour: the issuer's and the types' lifetimes allow no more."""
    bound = issuer.access_token_max_lifetime
    for name in token_types:
        lifetimes = pack.token_types[name].spec.lifetimes
        bound = min([bound, *(t for t in (lifetimes.ttl, lifetimes.absolute) if t is not None)])
    return math.floor(bound / 60)


def parse_new_client(body: Any, max_minutes: int) -> NewEmergencyClient:
    """A VCF ``EmergencyClient`` create body; EmergencyClientProblem says what is wrong with it."""
    if not isinstance(body, dict):
        raise EmergencyClientProblem("the body must be a JSON object (an EmergencyClient)")
    for name in body:
        if name in SERVER_FIELDS:
            raise EmergencyClientProblem(f"{name} is set by labgate, not by the request")
        if name not in CREATE_FIELDS:
            raise EmergencyClientProblem(f"unknown field {str(name)[:64]!r} (known: {', '.join(CREATE_FIELDS)})")
    client_id = body.get("clientId")
    if not isinstance(client_id, str) or not CLIENT_ID_SHAPE.fullmatch(client_id):
        raise EmergencyClientProblem(
            "clientId is required: 1 to 128 letters, digits and . _ @ + - (it names the client in paths)"
        )
    name = _text(body, "clientName", MAX_NAME, required=True)
    assert name is not None
    description = _text(body, "clientDescription", MAX_DESCRIPTION, required=False)
    ttl = body.get("accessTokenTtl")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
        raise EmergencyClientProblem(f"accessTokenTtl is required: the token's lifetime in whole minutes, from 1 to {max_minutes}")
    if ttl > max_minutes:
        # VCF's own example asks for 259200 minutes (180 days); the config decides whether labgate signs that long.
        raise EmergencyClientProblem(
            f"accessTokenTtl {ttl} minutes ({ttl / 1440:g} days) is longer than labgate signs tokens here: at most "
            f"{max_minutes} minutes ({max_minutes / 1440:g} days), set by issuer.access_token_max_lifetime and the "
            f"token type's lifetimes"
        )
    return NewEmergencyClient(client_id, name, description, ttl, parse_roles(body.get("roles")))


def _text(body: dict[str, Any], key: str, limit: int, *, required: bool) -> str | None:
    value = body.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > limit or _CONTROL.search(value):
        need = "is required: " if required else "must be "
        raise EmergencyClientProblem(f"{key} {need}a non-empty string of at most {limit} characters, without control characters")
    return value


def parse_roles(value: Any) -> tuple[str, ...]:
    """VCF roles are an array of objects: ``[{"roleName": "viewer"}]``; plain names are taken too."""
    if value is None:
        return ()
    if not isinstance(value, list) or len(value) > MAX_ROLES:
        raise EmergencyClientProblem(f"roles must be an array of at most {MAX_ROLES} roles")
    names: list[str] = []
    for role in value:
        name = role.get("roleName") if isinstance(role, dict) and set(role) == {"roleName"} else role
        if not isinstance(name, str) or not name or len(name) > MAX_ROLE_NAME or _CONTROL.search(name):
            raise EmergencyClientProblem('each role is {"roleName": "<name>"} (or the name alone), a non-empty name')
        if name not in names:
            names.append(name)
    return tuple(names)


# -- the stored record and what the API shows ---------------------------------------------


@dataclass(frozen=True)
class EmergencyClientRecord:
    """An emergency client as stored: never its token, only the token's fingerprint (to revoke it).

    The token fields are None when the record does not say (its status is
    then UNKNOWN).
    """

    client_id: str
    client_name: str
    client_description: str | None
    ttl_minutes: int
    roles: tuple[str, ...]
    upstream: str
    token_type: str
    created_at: float
    token_fingerprint: str | None = None
    token_expires_at: float | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> EmergencyClientRecord:
        """The record; MalformedRecord when it is not one (missing token fields are allowed: UNKNOWN)."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or set(data) - set(cls.__dataclass_fields__):
                raise ValueError("unexpected fields")
            data["roles"] = tuple(data.get("roles") or ())
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise MalformedRecord(f"a stored {RECORD_KIND} record cannot be read") from exc

    def status(self, now: float) -> str:
        """ACTIVE until the token expires, EXPIRED after, UNKNOWN when the record lacks the expiry."""
        if self.token_expires_at is None or self.token_fingerprint is None:
            return "UNKNOWN"
        return "ACTIVE" if now < self.token_expires_at else "EXPIRED"

    def view(self, issuer: IssuerSettings, now: float) -> dict[str, Any]:
        """The client in VCF's field names (plus labgate's ``upstream`` and ``tokenType``), without any token."""
        shown: dict[str, Any] = {"clientId": self.client_id, "clientName": self.client_name}
        if self.client_description is not None:
            shown["clientDescription"] = self.client_description
        shown["accessTokenTtl"] = self.ttl_minutes
        if self.token_expires_at is not None:
            shown["accessTokenExpirationDate"] = int(self.token_expires_at * 1000)
        shown.update({
            "accessTokenStatus": self.status(now),
            "roles": [{"roleName": r} for r in self.roles],
            "tokenEndpointUrl": issuer.token_endpoint,
            "oidcIssuerUrl": issuer.url,
            "upstream": self.upstream,
            "tokenType": self.token_type,
        })
        return shown

