"""Accounts the config itself defines: the administrator of the management API, and emergency accounts.

Both are written into the config as scrypt hashes (``labgate token
hash-password`` makes one), never as passwords:

```yaml
issuer:
  admin: {prefix: /-/admin, username: admin, password_hash: "scrypt$16384$8$1$..."}
  emergency_accounts:
    - {username: svtcli, password_hash: "scrypt$16384$8$1$..."}
```

Emergency accounts (SimpliVity's local ``svtcli``) work when every other
login is down, so they live in the config and not in the store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from proxy.issuer.secrets_hash import MalformedHash, parse_hash
from proxy.policy.model import parse_path_template
from proxy.yamlsource import FieldReader, LocatedDict

ADMIN_KEYS = ("prefix", "username", "password_hash")
EMERGENCY_ACCOUNT_KEYS = ("username", "password_hash")
DEFAULT_ADMIN_PREFIX = "/-/admin"
# Printable ASCII without ':' (RFC 7617: the user-id of Basic ends at the first colon) or spaces.
ACCOUNT_NAME = re.compile(r"[!-9;-~]{1,128}")


@dataclass(frozen=True)
class AdminSettings:
    """The management API: where it is mounted and the one administrator credential."""

    username: str
    password_hash: str = field(repr=False)
    prefix: str = DEFAULT_ADMIN_PREFIX


@dataclass(frozen=True)
class EmergencyAccount:
    username: str
    password_hash: str = field(repr=False)


def read_admin(reader: FieldReader, issuer: LocatedDict) -> AdminSettings | None:
    section = reader.section(issuer, "admin")
    if section is None:
        return None
    reader.expect_keys(section, ADMIN_KEYS, "issuer.admin")
    prefix = reader.string(section, "prefix", default=DEFAULT_ADMIN_PREFIX) or DEFAULT_ADMIN_PREFIX
    try:
        if not parse_path_template(prefix, what="issuer.admin.prefix", params=False):
            raise ValueError("issuer.admin.prefix must name a path below '/', like /-/admin")
    except ValueError as exc:
        reader.error(section, "prefix", str(exc))
        prefix = ""
    username = _account_name(reader, section)
    password_hash = _password_hash(reader, section)
    if not (prefix and username and password_hash):
        return None
    return AdminSettings(username, password_hash, prefix)


def read_emergency_accounts(reader: FieldReader, issuer: LocatedDict) -> tuple[EmergencyAccount, ...]:
    items = reader.items(issuer, "emergency_accounts")
    if items is None:
        return ()
    accounts: dict[str, EmergencyAccount] = {}
    for index, item in enumerate(items):
        if not isinstance(item, LocatedDict):
            reader.error(items, index, "each emergency account is a mapping {username, password_hash}")
            continue
        reader.expect_keys(item, EMERGENCY_ACCOUNT_KEYS, "an emergency account")
        username, password_hash = _account_name(reader, item), _password_hash(reader, item)
        if username in accounts:
            reader.error(item, "username", f"emergency account {username!r} is listed twice")
        elif username and password_hash:
            accounts[username] = EmergencyAccount(username, password_hash)
    return tuple(accounts.values())


def _account_name(reader: FieldReader, section: LocatedDict) -> str | None:
    username = reader.string(section, "username", required=True)
    if username is not None and not ACCOUNT_NAME.fullmatch(username):
        reader.error(section, "username", "a username is 1-128 printable ASCII characters without ':' or spaces")
        return None
    return username


def _password_hash(reader: FieldReader, section: LocatedDict) -> str | None:
    """A scrypt hash; a problem never quotes the value (it could be a password pasted by mistake)."""
    value = section.get("password_hash")
    if not isinstance(value, str) or not value:
        reader.error(section, "password_hash" if "password_hash" in section else None,
                     "password_hash is required: make one with `labgate token hash-password`")
        return None
    try:
        parse_hash(value)
    except MalformedHash as exc:
        reader.error(section, "password_hash", f"password_hash: {exc}")
        return None
    return value
