"""A service account's IP allowlist: set on the account, inherited by its tokens, narrowed never widened.

Commvault's documentation ('Creating an access token for a service account'):
"To control from which IP addresses the service account must be used to
execute REST APIs, do the following: Go to the IP allowlist section, click
Edit." The list belongs to the account, so every access token of the
account is held to it: a token created without its own list carries the
account's, and a token's own list must lie inside the account's (each entry
wholly within it), so it can only narrow.

Tokens carry their list in the ``client_ips`` claim, so a change of the
account's list cannot reach tokens already issued; instead, when the list
is set or changed, every token of the account whose list is not inside the
new one is revoked (its refresh chain with it), and the answer says which.
Removing the list revokes nothing: each token keeps the list it was issued
with, which is narrower than none.

The record (kind ``service-account-allowlist``, keyed by the account's name)
holds the entries as written.  No I/O beyond the store calls here.
"""

from __future__ import annotations

import json

from proxy.errors import LabgateError
from proxy.ipaddrs import AddressSet, InvalidAddress, parse_entry
from proxy.issuer.records import MalformedRecord
from proxy.reasons import Reason
from proxy.store.base import Store

RECORD_KIND = "service-account-allowlist"


class NotWithinAllowlist(LabgateError, ValueError):
    """A token's own list reaches beyond its account's; the message names the first entry that does."""

    reason = Reason.BAD_ADMIN_REQUEST


def within(entries: tuple[str, ...], allowlist: tuple[str, ...]) -> bool:
    """Whether every address of ``entries`` is in ``allowlist`` (both already valid entries)."""
    account = AddressSet.parse(allowlist)
    return all(account.covers(parse_entry(e)) for e in entries)


def token_allowlist(own: tuple[str, ...] | None, account: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """The list a new token carries: its own (inside the account's), the account's, or none."""
    if account is None:
        return own
    if own is None:
        return account
    outside = next((e for e in own if not within((e,), account)), None)
    if outside is not None:
        raise NotWithinAllowlist(
            f"ipAllowlist entry {outside!r} is not inside the service account's IP allowlist: "
            f"a token's own list can only narrow the account's ({', '.join(account)})"
        )
    return own


async def account_allowlist(store: Store, account: str, now: float) -> tuple[str, ...] | None:
    """The account's list, or None when it has none.  An unreadable record is MalformedRecord: refuse, never widen."""
    text = await store.get_record(RECORD_KIND, account, now)
    if text is None:
        return None
    try:
        entries = json.loads(text)["entries"]
        if not isinstance(entries, list) or not entries:
            raise ValueError("no entries")
        for entry in entries:
            parse_entry(entry)
    except (ValueError, KeyError, TypeError, InvalidAddress) as exc:
        raise MalformedRecord(f"a stored {RECORD_KIND} record cannot be read") from exc
    return tuple(entries)


async def set_account_allowlist(store: Store, account: str, entries: tuple[str, ...]) -> None:
    await store.put_record(RECORD_KIND, account, json.dumps({"entries": list(entries)}, separators=(",", ":")))


async def drop_account_allowlist(store: Store, account: str) -> bool:
    return await store.delete_record(RECORD_KIND, account)
