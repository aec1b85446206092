"""Subjects and API clients in the store: what the management API and ``labgate token`` both do.

A subject is someone tokens are issued for (the password grant logs in as
one); an API client (GreenLake-style) logs in with ``client_credentials`` and
gets tokens for its subject.  Secrets are made here, returned once to the
caller, and stored only as scrypt hashes.

Killing tokens is a revocation as of now (:mod:`proxy.tokens.state`): every
access token issued before it dies on its next request, and every refresh
chain begun before it can no longer be renewed.  These revocations are kept
(``until`` None) because a refresh chain may be renewed for months; there is
one per deleted subject, deleted client or reset secret.

A token's ``iat`` is in whole seconds, so a token issued later in the same
second as a revocation would look issued before it, and die.  Callers
therefore answer only once that second is over (:func:`revocation_settled`):
whatever is issued after they answered (with a reset secret, for a subject
created again) lives.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from proxy.errors import LabgateError
from proxy.issuer.records import NAME, ClientRecord, MalformedRecord, SubjectRecord
from proxy.issuer.secrets_hash import hash_secret_async
from proxy.reasons import Reason
from proxy.store.base import RevocationKind, Store

Revoke = Callable[[RevocationKind, str, float, float | None], Awaitable[None]]
MAX_CLIENT_NAME = 128
CLIENT_SECRET_BYTES = 32
R = TypeVar("R", SubjectRecord, ClientRecord)


class DirectoryError(LabgateError, ValueError):
    """A request the directory refuses; ``kind`` is ``invalid``, ``not_found`` or ``exists``."""

    def __init__(self, kind: str, message: str) -> None:
        reason = {"not_found": Reason.NOT_FOUND, "exists": Reason.ALREADY_EXISTS}.get(kind, Reason.BAD_ADMIN_REQUEST)
        super().__init__(message, reason)
        self.kind = kind


def check_name(name: object, what: str) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise DirectoryError("invalid", f"{what} is 1-128 letters, digits and . _ @ + -")
    return name


async def add_subject(store: Store, name: str, password: str | None, *, now: float) -> SubjectRecord:
    """A new subject; with a password it may use the password grant."""
    check_name(name, "a subject name")
    if password is not None and not isinstance(password, str):
        raise DirectoryError("invalid", "password must be a string")
    if await get_subject(store, name, now=now) is not None:
        raise DirectoryError("exists", f"subject {name!r} exists already")
    try:
        password_hash = await hash_secret_async(password) if password is not None else None
    except ValueError as exc:
        raise DirectoryError("invalid", str(exc)) from None
    record = SubjectRecord(name, password_hash, now)
    if not await store.add_record(SubjectRecord.KIND, name, record.to_json(), now):
        raise DirectoryError("exists", f"subject {name!r} exists already")  # added meanwhile, elsewhere
    return record


async def get_subject(store: Store, name: str, *, now: float) -> SubjectRecord | None:
    text = await store.get_record(SubjectRecord.KIND, name, now)
    return _read(SubjectRecord, text)


async def list_subjects(store: Store, *, now: float) -> list[SubjectRecord]:
    return [r for _, text in await store.list_records(SubjectRecord.KIND, now) if (r := _read(SubjectRecord, text))]


async def delete_subject(store: Store, revoke: Revoke, name: str, *, now: float) -> list[str]:
    """Delete a subject, its API clients, and every token of either; returns the deleted client ids.

    Revoked first: whatever fails later, nothing of the subject lives on.
    """
    if await get_subject(store, name, now=now) is None:
        raise DirectoryError("not_found", f"no subject {name!r}")
    await revoke("subject", name, now, None)
    deleted = []
    for client in await list_clients(store, now=now):
        if client.subject == name:
            await revoke("client", client.client_id, now, None)
            await store.delete_record(ClientRecord.KIND, client.client_id)
            deleted.append(client.client_id)
    await store.delete_record(SubjectRecord.KIND, name)
    return deleted


async def add_client(
    store: Store, name: str, subject: str, audience: str | None, *, now: float
) -> tuple[ClientRecord, str]:
    """A new API client of ``subject``, and its secret (shown once: only its hash is kept)."""
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_CLIENT_NAME or not name.isprintable():
        raise DirectoryError("invalid", f"a client name is 1-{MAX_CLIENT_NAME} printable characters")
    check_name(subject, "subject")
    if audience is not None:
        check_name(audience, "audience")
    if await get_subject(store, subject, now=now) is None:
        raise DirectoryError("invalid", f"no subject {subject!r}: create it first")
    secret = secrets.token_urlsafe(CLIENT_SECRET_BYTES)
    record = ClientRecord(str(uuid.uuid4()), await hash_secret_async(secret), subject, name, audience, now)
    if not await store.add_record(ClientRecord.KIND, record.client_id, record.to_json(), now):
        raise DirectoryError("exists", f"API client {record.client_id!r} exists already")  # never overwrite one
    return record, secret


async def get_client(store: Store, client_id: str, *, now: float) -> ClientRecord | None:
    return _read(ClientRecord, await store.get_record(ClientRecord.KIND, client_id, now))


async def list_clients(store: Store, *, now: float) -> list[ClientRecord]:
    return [r for _, text in await store.list_records(ClientRecord.KIND, now) if (r := _read(ClientRecord, text))]


async def reset_client_secret(store: Store, revoke: Revoke, client_id: str, *, now: float) -> tuple[ClientRecord, str]:
    """A new secret for the client; every token it holds dies on its next request."""
    client = await get_client(store, client_id, now=now)
    if client is None:
        raise DirectoryError("not_found", f"no API client {client_id!r}")
    await revoke("client", client_id, now, None)
    secret = secrets.token_urlsafe(CLIENT_SECRET_BYTES)
    record = ClientRecord(
        client.client_id, await hash_secret_async(secret), client.subject, client.name, client.audience, client.created_at
    )
    await store.put_record(ClientRecord.KIND, client_id, record.to_json())
    return record, secret


async def delete_client(store: Store, revoke: Revoke, client_id: str, *, now: float) -> None:
    if await get_client(store, client_id, now=now) is None:
        raise DirectoryError("not_found", f"no API client {client_id!r}")
    await revoke("client", client_id, now, None)
    await store.delete_record(ClientRecord.KIND, client_id)


async def revocation_settled(revoked_at: float, clock: Callable[[], float]) -> None:
    """Return once the second of ``revoked_at`` is over: tokens issued from then on are not covered."""
    delay = math.floor(revoked_at) + 1 - clock()
    if 0 < delay <= 1:
        await asyncio.sleep(delay)


def subject_view(record: SubjectRecord) -> dict[str, object]:
    """What an administrator sees of a subject: never the password hash."""
    return {"name": record.name, "has_password": record.password_hash is not None, "created_at": record.created_at}


def client_view(record: ClientRecord) -> dict[str, object]:
    """What an administrator sees of an API client: never the secret nor its hash."""
    return {
        "client_id": record.client_id, "name": record.name, "subject": record.subject,
        "audience": record.audience, "created_at": record.created_at,
    }


def _read(kind: type[R], text: str | None) -> R | None:
    """A stored record, or None when absent or unreadable (an unreadable one grants nothing)."""
    if text is None:
        return None
    try:
        return kind.from_json(text)
    except MalformedRecord:
        return None
