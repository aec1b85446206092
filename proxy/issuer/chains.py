"""Refresh chains: opaque refresh tokens, stored hashed, rotated on every use, reuse revoking the chain.

A chain begins when a refreshable token type is issued: an access token and
a refresh token that share a chain id (the access token's ``chain`` claim).
Renewing takes the refresh token's record atomically (``take_record``: of
two replicas, one wins), mints a new access token and a new refresh token in
the same chain, and leaves a ``refresh-spent`` record behind.  Presenting a
spent refresh token again means it was copied: the whole chain is revoked,
so the newest access token dies too and the newest refresh token no longer
renews (RFC 9700 section 4.14.2).  A chain renews until ``renew_until``
(chain start + the type's ``refresh_until``), never after.

The store knows a refresh token only by its sha256.  Records are kept
:data:`RENEWAL_GRACE` past ``renew_until`` so that a late renewal is told
why it fails, and a late reuse still revokes.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field, replace
from typing import TypeVar

from proxy.issuer.access_tokens import AccessTokenGrant, MintedToken, mint_access_token
from proxy.issuer.records import MalformedRecord, RefreshRecord, RefreshSpentRecord
from proxy.issuer.ring import SigningKey
from proxy.issuer.settings import IssuerSettings
from proxy.store.base import Store
from proxy.token_facts import token_fingerprint

REFRESH_TOKEN_BYTES = 32
RENEWAL_GRACE = 86400.0
R = TypeVar("R", RefreshRecord, RefreshSpentRecord)


@dataclass(frozen=True)
class IssuedTokens:
    """An access token and, for a refreshable type, its refresh token (secret: shown once, never logged)."""

    access: MintedToken
    refresh_token: str | None = field(default=None, repr=False)


def new_chain_id() -> str:
    return str(uuid.uuid4())


def refresh_key(token: str) -> str:
    """How the store names a refresh token: its sha256, never its text."""
    return token_fingerprint(token)


def chain_revocation_until(renew_until: float, issuer: IssuerSettings) -> float:
    """A chain's revocation must outlive every token it covers: its refresh records and their last access token."""
    return renew_until + RENEWAL_GRACE + issuer.access_token_max_lifetime


async def issue_in_chain(
    store: Store, key: SigningKey, issuer: IssuerSettings, grant: AccessTokenGrant, chain: RefreshRecord, *, now: float
) -> IssuedTokens:
    """Mint ``grant`` in ``chain`` (the grant's ``chain`` is set here) and store a new refresh token for it.

    Used to begin a chain and to renew one.  The refresh token's record is
    kept until ``renew_until`` plus the grace, and names the access token
    minted with it.  Raises StoreUnavailable.
    """
    access = mint_access_token(key, issuer, replace(grant, chain=chain.chain), now=now)
    refresh_token = secrets.token_urlsafe(REFRESH_TOKEN_BYTES)
    record = replace(chain, access_fingerprint=access.fingerprint)
    await store.put_record(
        RefreshRecord.KIND, refresh_key(refresh_token), record.to_json(), expires_at=chain.renew_until + RENEWAL_GRACE
    )
    return IssuedTokens(access, refresh_token)


async def peek(store: Store, refresh_token: str, *, now: float) -> RefreshRecord | None:
    """The refresh token's record, left in place; None when unknown, used, expired or unreadable."""
    return _read(RefreshRecord, await store.get_record(RefreshRecord.KIND, refresh_key(refresh_token), now))


async def take(store: Store, refresh_token: str, *, now: float) -> RefreshRecord | None:
    """Atomically read and delete the record: whoever gets it is the one renewal of this refresh token."""
    return _read(RefreshRecord, await store.take_record(RefreshRecord.KIND, refresh_key(refresh_token), now))


async def spent(store: Store, refresh_token: str, *, now: float) -> RefreshSpentRecord | None:
    """The chain of a refresh token that was already used, if it was."""
    return _read(RefreshSpentRecord, await store.get_record(RefreshSpentRecord.KIND, refresh_key(refresh_token), now))


async def mark_spent(store: Store, refresh_token: str, record: RefreshRecord) -> None:
    spent_record = RefreshSpentRecord(record.chain, record.renew_until)
    await store.put_record(
        RefreshSpentRecord.KIND, refresh_key(refresh_token), spent_record.to_json(),
        expires_at=record.renew_until + RENEWAL_GRACE,
    )


def _read(kind: type[R], text: str | None) -> R | None:
    if text is None:
        return None
    try:
        return kind.from_json(text)
    except MalformedRecord:
        return None
