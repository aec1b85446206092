"""Read an upstream's ``credential`` section: what labgate authenticates to the appliance with.

Three kinds: ``bearer`` (a static token), ``basic`` (a user and password) and
``oauth`` (a ``password`` or ``client_credentials`` login at the appliance's
token endpoint, RFC 6749 sections 4.3 and 4.4).  Secrets come from files or
environment variables, never from the config text, and never show in a repr.

An ``observe`` upstream cannot have one: its clients' tokens are the
appliance's own, and replacing them would defeat what the source learns.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from yarl import URL

from proxy.yamlsource import FieldReader, LocatedDict, parse_duration, read_secret

CREDENTIAL_TYPES = ("bearer", "basic", "oauth")
BEARER_KEYS = ("type", "token_file", "token_env")
BASIC_KEYS = ("type", "username", "password_file", "password_env")
OAUTH_KEYS = (
    "type", "token_url", "grant", "client_id", "client_secret_file", "client_secret_env", "username",
    "password_file", "password_env", "scope", "parameters", "client_auth", "renew_before", "idle_timeout",
    "timeout", "tls",
)
GRANTS = ("password", "client_credentials")
# Form fields labgate sets itself; ``parameters`` adds others (HCP's ``realm``).
RESERVED_PARAMETERS = frozenset(
    {"grant_type", "username", "password", "client_id", "client_secret", "scope", "refresh_token", "code"}
)
_PARAMETER_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
# A header value must never carry a line break or anything a parser could read differently.
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")
_TEXT_SAFE = re.compile(r"[^\x00-\x1f\x7f]*")
_LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")

Grant = Literal["password", "client_credentials"]
ClientAuth = Literal["basic", "post"]


@dataclass(frozen=True)
class BearerCredentialSettings:
    """``Authorization: Bearer <token>``, the token read from a file or the environment."""

    token: str = field(repr=False)

    def __post_init__(self) -> None:
        if not _HEADER_SAFE.fullmatch(self.token):
            raise ValueError("the bearer token must be printable ASCII without spaces")


@dataclass(frozen=True)
class BasicCredentialSettings:
    """``Authorization: Basic`` (RFC 7617) with a fixed user."""

    username: str
    password: str = field(repr=False)

    def __post_init__(self) -> None:
        if ":" in self.username or not _TEXT_SAFE.fullmatch(self.username) or not _TEXT_SAFE.fullmatch(self.password):
            raise ValueError("a Basic username has no ':' and neither it nor the password has control characters")


@dataclass(frozen=True)
class OAuthCredentialSettings:
    """A login labgate performs at the appliance's token endpoint, then holds and renews.

    ``renew_before`` is seconds before expiry, ``renew_fraction`` a share of the
    token's lifetime (``"10%"``); neither given: 60 s or a tenth of the
    lifetime, whichever is shorter.  ``idle_timeout``: log in again when the
    held token went unused this long (an appliance that ends idle tokens).
    ``tls_verify``/``ca_file`` apply only to a token endpoint outside the
    upstream's own origin; on it, the upstream's ``tls`` applies.
    """

    token_url: str
    grant: Grant
    client_id: str | None = None
    client_secret: str | None = field(default=None, repr=False)
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    scope: str | None = None
    parameters: tuple[tuple[str, str], ...] = ()
    client_auth: ClientAuth = "basic"
    renew_before: float | None = None
    renew_fraction: float | None = None
    idle_timeout: float | None = None
    timeout: float = 10.0
    tls_verify: bool = True
    ca_file: Path | None = None

    def __post_init__(self) -> None:
        url = URL(self.token_url)
        if not url.host or url.scheme not in ("http", "https") or url.user or url.password or url.fragment:
            raise ValueError("token_url must be an https:// URL without credentials, e.g. https://appliance/api/oauth/token")
        # The password or client secret travels in the request: TLS, or loopback only.
        if url.scheme != "https" and url.host not in _LOOPBACK_HOSTS:
            raise ValueError("token_url must be https:// (plain http only on loopback)")
        if self.grant == "password" and not (self.username and self.password):
            raise ValueError("the password grant needs username and password_file or password_env")
        if self.grant == "client_credentials" and not (self.client_id and self.client_secret):
            raise ValueError("the client_credentials grant needs client_id and client_secret_file or client_secret_env")
        if self.client_secret and not self.client_id:
            raise ValueError("a client secret needs its client_id")
        if self.renew_before is not None and self.renew_fraction is not None:
            raise ValueError("renew_before is seconds or a share of the lifetime, not both")
        if self.renew_fraction is not None and not 0 < self.renew_fraction < 1:
            raise ValueError("renew_before as a share must lie between 1% and 99%")
        if self.timeout <= 0 or (self.renew_before is not None and self.renew_before <= 0):
            raise ValueError("timeout and renew_before must be positive")

    def renew_margin(self, lifetime: float) -> float:
        """How long before expiry to log in again; never before half the lifetime has passed."""
        if self.renew_before is not None:
            margin = self.renew_before
        elif self.renew_fraction is not None:
            margin = lifetime * self.renew_fraction
        else:
            margin = min(60.0, lifetime / 10)
        return min(margin, lifetime / 2)


CredentialSettings = BearerCredentialSettings | BasicCredentialSettings | OAuthCredentialSettings


def read_credential(
    reader: FieldReader, upstream: LocatedDict, base: Path, upstream_url: URL | None
) -> CredentialSettings | None:
    """The upstream's ``credential`` section; None when it has none, or problems (all reported)."""
    section = reader.section(upstream, "credential")
    if section is None:
        return None
    problems_before = len(reader.problems.items)
    kind = reader.choice(section, "type", CREDENTIAL_TYPES, default="bearer")
    if "type" not in section:
        reader.error(section, None, f"credential needs 'type' (one of {', '.join(CREDENTIAL_TYPES)})")
    source = upstream.get("token_source")
    if isinstance(source, LocatedDict) and source.get("type") == "observe":
        reader.error(
            section, None,
            "an observe upstream's clients send the appliance's own tokens: it cannot have a credential",
        )
    # Every forwarded request carries the credential: TLS, or loopback only.
    if upstream_url is not None and upstream_url.scheme != "https" and upstream_url.host not in _LOOPBACK_HOSTS:
        reader.error(section, None, "a credential goes with every request: the upstream url must be https:// (plain http only on loopback)")
    if kind == "basic":
        settings: CredentialSettings | None = _read_basic(reader, section, base)
    elif kind == "oauth":
        settings = _read_oauth(reader, section, base, upstream_url)
    else:
        settings = _read_bearer(reader, section, base)
    return settings if len(reader.problems.items) == problems_before else None


def _read_bearer(reader: FieldReader, section: LocatedDict, base: Path) -> BearerCredentialSettings | None:
    reader.expect_keys(section, BEARER_KEYS, "a bearer credential")
    token = read_secret(reader, section, base, "token", required=True)
    if token is None:
        return None
    try:
        return BearerCredentialSettings(token)
    except ValueError as exc:
        reader.error(section, None, f"credential: {exc}")
        return None


def _read_basic(reader: FieldReader, section: LocatedDict, base: Path) -> BasicCredentialSettings | None:
    reader.expect_keys(section, BASIC_KEYS, "a basic credential")
    username = reader.string(section, "username", required=True)
    password = read_secret(reader, section, base, "password", required=True)
    if username is None or password is None:
        return None
    try:
        return BasicCredentialSettings(username, password)
    except ValueError as exc:
        reader.error(section, "username", f"credential: {exc}")
        return None


def _read_oauth(
    reader: FieldReader, section: LocatedDict, base: Path, upstream_url: URL | None
) -> OAuthCredentialSettings | None:
    reader.expect_keys(section, OAUTH_KEYS, "an oauth credential")
    problems_before = len(reader.problems.items)
    token_url = reader.string(section, "token_url", required=True)
    grant = reader.choice(section, "grant", GRANTS, default="password")
    if "grant" not in section:
        reader.error(section, None, f"an oauth credential needs 'grant' (one of {', '.join(GRANTS)})")
    renew_before, renew_fraction = _read_renew_before(reader, section)
    tls_verify, ca_file = _read_token_url_tls(reader, section, base, token_url, upstream_url)
    client_id = reader.string(section, "client_id")
    client_secret = read_secret(reader, section, base, "client_secret", required=False)
    username = reader.string(section, "username")
    scope = reader.string(section, "scope")
    password = read_secret(reader, section, base, "password", required=False)
    parameters = _read_parameters(reader, section)
    client_auth = reader.choice(section, "client_auth", ("basic", "post"), default="basic")
    idle_timeout = reader.duration(section, "idle_timeout")
    timeout = reader.number(section, "timeout", default=10.0, minimum=0.1)
    if grant == "client_credentials" and "username" in section:
        reader.error(section, "username", "the client_credentials grant logs in as the client: leave out username")
    if len(reader.problems.items) > problems_before or token_url is None:
        return None
    try:
        return OAuthCredentialSettings(
            token_url=token_url,
            grant="client_credentials" if grant == "client_credentials" else "password",
            client_id=client_id,
            client_secret=client_secret,
            username=username,
            password=password,
            scope=scope,
            parameters=parameters,
            client_auth="post" if client_auth == "post" else "basic",
            renew_before=renew_before,
            renew_fraction=renew_fraction,
            idle_timeout=idle_timeout,
            timeout=timeout,
            tls_verify=tls_verify,
            ca_file=ca_file,
        )
    except ValueError as exc:
        reader.error(section, None, f"credential: {exc}")
        return None


def _read_renew_before(reader: FieldReader, section: LocatedDict) -> tuple[float | None, float | None]:
    """``renew_before``: seconds (``60``, ``2m``) or a share of the token's lifetime (``"10%"``)."""
    value = section.get("renew_before")
    if value is None:
        return None, None
    if isinstance(value, str) and value.endswith("%"):
        number = value[:-1]
        if not number.isascii() or not number.isdigit() or not 1 <= int(number) <= 99:
            reader.error(section, "renew_before", f"renew_before {value!r}: a share is a whole percentage from 1% to 99%")
            return None, None
        return None, int(number) / 100
    try:
        return parse_duration(value), None
    except ValueError as exc:
        reader.error(section, "renew_before", f"renew_before: {exc}, or a share like '10%'")
        return None, None


def _read_token_url_tls(
    reader: FieldReader, section: LocatedDict, base: Path, token_url: str | None, upstream_url: URL | None
) -> tuple[bool, Path | None]:
    """TLS towards a token endpoint elsewhere (an SSO service); the appliance's own origin uses the upstream's."""
    tls = reader.section(section, "tls")
    if tls is None:
        return True, None
    reader.expect_keys(tls, ("verify", "ca_file"), "credential.tls")
    try:
        same_origin = bool(token_url and upstream_url and URL(token_url).origin() == upstream_url.origin())
    except ValueError:
        same_origin = False
    if same_origin:
        reader.error(section, "tls", "token_url is on the upstream itself: the upstream's tls applies, leave out credential.tls")
    verify = reader.boolean(tls, "verify", default=True)
    ca_file = None
    ca_text = reader.string(tls, "ca_file")
    if ca_text is not None:
        ca_file = (base / os.path.expanduser(ca_text)).resolve()
        if not ca_file.is_file():
            reader.error(tls, "ca_file", f"ca_file: file {ca_text!r} does not exist (looked at {ca_file})")
        if not verify:
            reader.error(tls, "ca_file", "ca_file has no effect with verify: false")
    return verify, ca_file


def _read_parameters(reader: FieldReader, section: LocatedDict) -> tuple[tuple[str, str], ...]:
    """Extra form fields of the login (``realm: Local``); never a secret, never one labgate sets itself."""
    body = reader.section(section, "parameters")
    if body is None:
        return ()
    parameters: list[tuple[str, str]] = []
    for name, value in body.items():
        if not _PARAMETER_NAME.fullmatch(name):
            reader.error(body, name, f"parameter name {name!r} must be letters, digits, '_', '.' or '-'")
        elif name in RESERVED_PARAMETERS:
            reader.error(body, name, f"parameter {name!r} is set by labgate from the credential's own keys")
        elif not isinstance(value, str) or not value or not _TEXT_SAFE.fullmatch(value):
            reader.error(body, name, f"parameter {name!r} must be a non-empty string without control characters")
        else:
            parameters.append((name, value))
    return tuple(parameters)
