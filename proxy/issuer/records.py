"""The token service's state, as records in the store (``put_record`` and friends).

Each record is a frozen dataclass stored as compact JSON under its ``KIND``
and key.  Nothing secret is ever stored in clear: passwords and client
secrets as scrypt hashes (:mod:`proxy.issuer.secrets_hash`), refresh tokens
only as the key of their record, their sha256.

* ``subject`` (key: the name): someone tokens are issued for; deleting one
  revokes every token and deletes every API client it has.
* ``client`` (key: the client id): a GreenLake-style API client, which logs
  in with ``client_credentials`` as its subject.
* ``refresh`` (key: sha256 of the refresh token): what renewing it may mint,
  and its chain; taken (read and deleted at once) when used.
* ``refresh-spent`` (key: sha256 of a used refresh token): its chain, so that
  presenting it again revokes the whole chain (RFC 9700 section 4.14.2).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar, TypeVar

from proxy.errors import LabgateError

R = TypeVar("R", bound="_Record")
# Subject names, client ids, audiences: what may sit in a path segment and a log line as is
# (never "." or "..", which a path could resolve).
NAME = re.compile(r"(?!\.\.?\Z)[A-Za-z0-9._@+-]{1,128}")


class MalformedRecord(LabgateError, ValueError):
    """A stored record that is not what its kind says: treated as absent, never trusted."""


@dataclass(frozen=True)
class _Record:
    KIND: ClassVar[str]

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls: type[R], text: str) -> R:
        try:
            values = json.loads(text)
            if not isinstance(values, dict) or set(values) - {f.name for f in fields(cls)}:
                raise ValueError("unexpected fields")
            return cls(**_tuples(cls, values))
        except (ValueError, TypeError) as exc:
            raise MalformedRecord(f"a stored {cls.KIND} record cannot be read") from exc


def _tuples(cls: type[_Record], values: dict[str, Any]) -> dict[str, Any]:
    """JSON has lists; the dataclasses hold tuples (frozen all the way down)."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}


@dataclass(frozen=True)
class SubjectRecord(_Record):
    """Someone labgate issues tokens for; ``password_hash`` None: no password grant for them."""

    KIND: ClassVar[str] = "subject"
    name: str
    password_hash: str | None
    created_at: float


@dataclass(frozen=True)
class ClientRecord(_Record):
    """An API client: its secret's scrypt hash, the subject its tokens are for, the audience it is limited to."""

    KIND: ClassVar[str] = "client"
    client_id: str
    secret_hash: str
    subject: str
    name: str
    audience: str | None
    created_at: float


@dataclass(frozen=True)
class RefreshRecord(_Record):
    """What a refresh token renews: the same grant, in the same chain, until ``renew_until``.

    ``upstream`` is the upstream the chain's tokens are for; ``confidential``
    says the client authenticated when the chain began, so renewing needs
    that client's authentication too (RFC 6749 section 6); ``principal`` is
    ``subject`` (a subject record must still exist) or ``emergency`` (an
    emergency account of the config); ``access_fingerprint`` is the sha256
    of the access token minted with this refresh token (Commvault's Renew
    presents the two as a pair).
    """

    KIND: ClassVar[str] = "refresh"
    chain: str
    subject: str
    client_id: str
    token_type: str
    audience: str
    upstream: str
    scope: tuple[str, ...]
    path_prefixes: tuple[str, ...] | None
    client_ips: tuple[str, ...] | None
    chain_created_at: float
    renew_until: float
    confidential: bool = False
    principal: str = "subject"
    access_fingerprint: str | None = None


@dataclass(frozen=True)
class RefreshSpentRecord(_Record):
    """A used refresh token: presenting it again means it was stolen, or replayed."""

    KIND: ClassVar[str] = "refresh-spent"
    chain: str
    renew_until: float
