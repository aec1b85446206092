"""The config's ``issuer`` section: who labgate is when it issues tokens, and how it keeps its keys.

Read strictly like the rest of the config (``file:line`` errors, unknown keys
refused).  The passphrase that encrypts private keys at rest comes from a file
or an environment variable, never from the config text, and is kept out of
every ``repr``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from yarl import URL

from proxy.issuer.accounts import (
    AdminSettings,
    EmergencyAccount,
    read_admin,
    read_emergency_accounts,
)
from proxy.yamlsource import FieldReader, LocatedDict, read_secret

# Public-key algorithms only: the key that verifies is published in the JWKS, so
# it must never be able to sign (an HMAC secret would be both).
ISSUER_ALGORITHMS = ("ES256", "RS256")
ISSUER_KEYS = (
    "url", "algorithm", "access_token_max_lifetime", "key_refresh_interval", "leeway",
    "key_passphrase_file", "key_passphrase_env", "admin", "emergency_accounts",
)
JWKS_PATH = "/.well-known/jwks.json"
# RFC 8414 section 3: the well-known suffix sits right after the issuer's origin (no path here).
METADATA_PATH = "/.well-known/oauth-authorization-server"
TOKEN_PATH = "/oauth/token"
ISSUER_PATHS = (JWKS_PATH, METADATA_PATH, TOKEN_PATH)
DAY = 86400.0
MAX_ACCESS_TOKEN_LIFETIME = 366 * DAY
MIN_PASSPHRASE_LENGTH = 16
_LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class IssuerSettings:
    """labgate as token issuer.

    ``url`` is the ``iss`` of every token and the origin clients reach labgate
    at (no path, no trailing slash).  A retired key keeps verifying for
    :attr:`retired_key_grace` after rotation: the longest token it can have
    signed, plus the time a replica may still sign with it before it sees the
    rotation, plus the clock leeway.  ``admin`` enables the management API;
    ``emergency_accounts`` may use the ``emergency`` grant.
    """

    url: str
    algorithm: str = "ES256"
    access_token_max_lifetime: float = DAY
    key_refresh_interval: float = 5.0
    leeway: float = 5.0
    key_passphrase: bytes | None = field(default=None, repr=False)
    admin: AdminSettings | None = None
    emergency_accounts: tuple[EmergencyAccount, ...] = ()

    def __post_init__(self) -> None:
        if self.algorithm not in ISSUER_ALGORITHMS:
            raise ValueError(f"algorithm must be one of {', '.join(ISSUER_ALGORITHMS)}, not {self.algorithm!r}")
        if not 1 <= self.access_token_max_lifetime <= MAX_ACCESS_TOKEN_LIFETIME:
            raise ValueError("access_token_max_lifetime must be between 1 s and 366 days")
        if self.key_refresh_interval < 1 or self.leeway < 0:
            raise ValueError("key_refresh_interval must be at least 1 s and leeway not negative")

    @property
    def token_endpoint(self) -> str:
        return self.url + TOKEN_PATH

    @property
    def jwks_uri(self) -> str:
        return self.url + JWKS_PATH

    @property
    def retired_key_grace(self) -> float:
        return self.access_token_max_lifetime + self.key_refresh_interval + self.leeway


def read_issuer(reader: FieldReader, root: LocatedDict, base: Path) -> IssuerSettings | None:
    """The ``issuer`` section, or None when the config has none (or it has problems, all reported)."""
    section = reader.section(root, "issuer")
    if section is None:
        return None
    reader.expect_keys(section, ISSUER_KEYS, "issuer")
    problems_before = len(reader.problems.items)
    url = _read_issuer_url(reader, section)
    algorithm = reader.choice(section, "algorithm", ISSUER_ALGORITHMS, default="ES256")
    lifetime = reader.duration(section, "access_token_max_lifetime") or DAY
    if lifetime > MAX_ACCESS_TOKEN_LIFETIME:
        reader.error(section, "access_token_max_lifetime", "access_token_max_lifetime must be at most 366d")
    refresh = reader.number(section, "key_refresh_interval", default=5.0, minimum=1.0)
    if refresh > 300:
        reader.error(section, "key_refresh_interval", "key_refresh_interval must be at most 300 seconds")
    leeway = reader.number(section, "leeway", default=5.0, minimum=0.0)
    if leeway > 300:
        reader.error(section, "leeway", "leeway must be at most 300 seconds")
    passphrase = _read_passphrase(reader, section, base)
    admin = read_admin(reader, section)
    emergency_accounts = read_emergency_accounts(reader, section)
    if url is None or len(reader.problems.items) > problems_before:
        return None
    return IssuerSettings(url, algorithm, lifetime, refresh, leeway, passphrase, admin, emergency_accounts)


def _read_issuer_url(reader: FieldReader, section: LocatedDict) -> str | None:
    """An origin (scheme, host, port): ``iss`` is compared as a string, so it gets one spelling."""
    text = reader.string(section, "url", required=True)
    if text is None:
        return None
    try:
        url = URL(text)
    except ValueError:
        reader.error(section, "url", f"issuer url {text!r} is not a URL")
        return None
    if not url.host or url.scheme not in ("https", "http"):
        reader.error(section, "url", f"issuer url {text!r} must be https:// with a host")
        return None
    # Clients fetch the keys from here: only TLS protects them in transit (plain http on loopback only).
    if url.scheme == "http" and url.host not in _LOOPBACK_HOSTS:
        reader.error(section, "url", f"issuer url {text!r} must be https:// (plain http only on loopback)")
        return None
    if url.raw_path not in ("", "/") or url.query_string or url.fragment or url.user or url.password:
        reader.error(section, "url", f"issuer url {text!r} must be an origin only, like https://labgate.lab.example")
        return None
    return str(url.origin())


def _read_passphrase(reader: FieldReader, section: LocatedDict, base: Path) -> bytes | None:
    """At most one of key_passphrase_file, key_passphrase_env; none keeps private keys unencrypted."""
    secret = read_secret(reader, section, base, "key_passphrase", required=False)
    if secret is None:
        return None
    if len(secret) < MIN_PASSPHRASE_LENGTH:
        key = "key_passphrase_file" if "key_passphrase_file" in section else "key_passphrase_env"
        reader.error(section, key, f"the key passphrase must be at least {MIN_PASSPHRASE_LENGTH} characters")
        return None
    return secret.encode()


def check_issuer_paths(
    reader: FieldReader,
    root: LocatedDict,
    own_paths: Iterable[str],
    path_prefixes: Iterable[tuple[int, str]],
    admin_prefix: str | None = None,
) -> None:
    """The issuer's paths must not be hidden by an upstream's path_prefix nor taken by another endpoint.

    The management API's ``admin_prefix`` owns everything below it: it may
    neither overlap an upstream's path_prefix nor hold another endpoint.
    """
    if "issuer" not in root:
        return
    own_paths, path_prefixes = tuple(own_paths), tuple(path_prefixes)
    for own in own_paths:
        if own in ISSUER_PATHS:
            reader.error(root.get("endpoints"), None, f"endpoint {own} is one of the issuer's own paths")
        if admin_prefix and _overlaps(own, admin_prefix):
            reader.error(root.get("endpoints"), None, f"endpoint {own} overlaps issuer.admin.prefix {admin_prefix}")
    for index, prefix in path_prefixes:
        for path in ISSUER_PATHS:
            if path == prefix or path.startswith(prefix + "/"):
                reader.error(root.get("upstreams"), index, f"path_prefix {prefix!r} would hide the issuer's {path}")
        if admin_prefix and _overlaps(prefix, admin_prefix):
            reader.error(root.get("upstreams"), index, f"path_prefix {prefix!r} overlaps issuer.admin.prefix {admin_prefix}")
    if admin_prefix and any(_overlaps(path, admin_prefix) for path in ISSUER_PATHS):
        reader.error(root.get("issuer"), "admin", f"issuer.admin.prefix {admin_prefix} overlaps the issuer's own paths")


def _overlaps(a: str, b: str) -> bool:
    """One path is the other, or lies below it (whole segments)."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")
