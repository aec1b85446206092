"""Service-account access tokens (Commvault-style): scopes, what a create request may say, and the record.

Commvault's documentation ('Creating an access token for a service
account'): a service account gets access tokens with a name, an expiry or a
renewable period, one scope and an IP allowlist.

* Scopes: All, Custom (the token's own endpoint list, "each endpoint on a new
  line"; the commvault pack reads them as Commvault does, "/plans" opening
  the APIs starting with /plan), Hyperscale, 1-Touch
  recovery (exactly /Client, /MediaAgent, /ClientGroup, /V4/ServerGroup,
  /FirewallSummary) and Microsoft SCIM.  The upstream's
  ``token_source.service_accounts`` maps each scope it offers to a pack type.
* All, Custom and Hyperscale tokens come with a refresh token and renew until
  ``renewableUntilTimestamp`` (default: the type's ``lifetimes.refresh_until``
  after creation, 90 days in the commvault pack, which is also the most
  labgate allows); the access token lives the type's ``ttl`` (30 minutes),
  as every renewal's does.
* 1-Touch and SCIM tokens are never renewable; they live 7 and 30 days by
  default, at most the type's ``ttl`` (the vendor's 14 and 365 days).  A
  lifetime beyond ``issuer.access_token_max_lifetime`` is refused; the
  default is cut to it.
* The IP allowlist takes every form the Commvault document lists (10.0.0.1,
  full or compressed IPv6, 1.1.1.0/24, 2001:0db8:85a3::/64, "1.1.1.0 –
  1.1.1.25" with an en dash, "2001:db8::1 - 2001:db8::ffff").  It belongs to
  the service account (:mod:`proxy.issuer.account_allowlists`): a token's own
  list may only narrow the account's.

The token carries its endpoint list and allowlist as the ``path_prefixes`` and
``client_ips`` claims, so every request is narrowed by them.  Timestamps are
epoch seconds, as Commvault shows them.  No I/O here:
:mod:`proxy.issuer.service_account_api` serves it.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

from proxy.errors import LabgateError
from proxy.ipaddrs import InvalidAddress, parse_entry
from proxy.issuer.chains import IssuedTokens
from proxy.issuer.grants import token_terms
from proxy.issuer.records import MalformedRecord
from proxy.issuer.settings import DAY, IssuerSettings
from proxy.policy.compile import CompiledPack
from proxy.policy.model import Lifetimes
from proxy.reasons import Reason
from proxy.token_narrowing import MalformedNarrowing, path_prefixes_claim
from proxy.yamlsource import FieldReader, LocatedDict

RECORD_KIND = "service-token"
ALL, CUSTOM, HYPERSCALE, ONE_TOUCH, SCIM = "All", "Custom", "Hyperscale", "1-Touch recovery", "Microsoft SCIM"
SCOPES = (ALL, CUSTOM, HYPERSCALE, ONE_TOUCH, SCIM)
ONE_TOUCH_PREFIXES = ("/Client", "/MediaAgent", "/ClientGroup", "/V4/ServerGroup", "/FirewallSummary")
# Not renewable: (default lifetime, the vendor's most), used when the type sets no ttl.
FIXED_LIFETIMES = {ONE_TOUCH: (7 * DAY, 14 * DAY), SCIM: (30 * DAY, 365 * DAY)}
CREATE_FIELDS = ("tokenName", "scope", "apiEndpoints", "ipAllowlist", "tokenExpiryTimestamp", "renewableUntilTimestamp")
SERVER_FIELDS = ("accessTokenId", "accessToken", "refreshToken", "refreshTokenExpiryTimestamp", "userId")
MAX_NAME = 256
MAX_ENTRIES = 256
MAX_ENDPOINT = 512


# -- configuration: token_source.service_accounts ----------------------------------------


@dataclass(frozen=True)
class ServiceAccountScopes:
    """The scopes an upstream offers, each with the pack type its tokens get."""

    types: tuple[tuple[str, str], ...]  # (scope, token type), in SCOPES order

    def token_type(self, scope: str) -> str | None:
        return dict(self.types).get(scope)

    @property
    def scopes(self) -> tuple[str, ...]:
        return tuple(scope for scope, _ in self.types)


def read_service_accounts(
    reader: FieldReader, source: LocatedDict, pack: CompiledPack | None, accepted: tuple[str, ...]
) -> ServiceAccountScopes | None:
    """``service_accounts: {All: all, Custom: custom, ...}``; None when absent or wrong (reported).

    ``accepted``: the types the upstream's source accepts; every token must be one of them.
    """
    section = reader.section(source, "service_accounts")
    if section is None:
        return None
    problems_before = len(reader.problems.items)
    if not section:
        reader.error(source, "service_accounts", f"service_accounts: map at least one scope ({', '.join(SCOPES)}) to a token type")
    for scope in section:
        if scope not in SCOPES:
            reader.error(section, scope, f"unknown scope {scope!r} in service_accounts (known: {', '.join(SCOPES)})")
            continue
        name = reader.string(section, scope, required=True)
        if name is None:
            continue
        if pack is not None and name not in pack.token_types:
            known = ", ".join(sorted(pack.token_types))
            reader.error(section, scope, f"unknown token type {name!r} in pack {pack.name!r} (known: {known})")
        elif pack is not None and scope in FIXED_LIFETIMES and pack.token_types[name].spec.lifetimes.refresh_until:
            reader.error(section, scope, f"{scope} tokens are not renewable: map the scope to a type without lifetimes.refresh_until")
        elif pack is not None and name not in accepted:
            reader.error(section, scope, f"token type {name!r} is not among this upstream's token_types")
    if len(reader.problems.items) > problems_before:
        return None
    return ServiceAccountScopes(tuple((s, section[s]) for s in SCOPES if s in section))


# -- the API's input ---------------------------------------------------------------------


class ServiceAccountProblem(LabgateError, ValueError):
    """A create request labgate refuses; the message says what to send instead."""

    reason = Reason.BAD_ADMIN_REQUEST


@dataclass(frozen=True)
class NewServiceToken:
    """A create request, checked for shape (lifetimes are checked by :func:`plan_token`)."""

    name: str
    scope: str
    api_endpoints: tuple[str, ...] | None
    ip_allowlist: tuple[str, ...] | None
    token_expiry: int | None
    renewable_until: int | None


def parse_new_token(body: Any, offered: tuple[str, ...]) -> NewServiceToken:
    """A create body; ``offered``: the scopes the upstream maps to token types."""
    if not isinstance(body, dict):
        raise ServiceAccountProblem("the body must be a JSON object")
    for field in body:
        if field in SERVER_FIELDS:
            raise ServiceAccountProblem(f"{field} is set by labgate, not by the request")
        if field not in CREATE_FIELDS:
            raise ServiceAccountProblem(f"unknown field {str(field)[:64]!r} (known: {', '.join(CREATE_FIELDS)})")
    name = body.get("tokenName")
    if not isinstance(name, str) or not name.strip() or len(name) > MAX_NAME or not name.isprintable():
        raise ServiceAccountProblem(f"tokenName is required: a printable name of at most {MAX_NAME} characters")
    scope = _scope(body.get("scope", ALL), offered)
    endpoints = lines_of(body, "apiEndpoints")
    if scope == CUSTOM and not endpoints:
        raise ServiceAccountProblem("the Custom scope needs apiEndpoints: the endpoints the token may call, one per line")
    if scope != CUSTOM and endpoints is not None:
        raise ServiceAccountProblem(f"apiEndpoints belong to the Custom scope; a {scope} token's endpoints are fixed by its scope")
    if endpoints:
        _check_endpoints(endpoints)
    allowlist = lines_of(body, "ipAllowlist")
    if allowlist:
        check_allowlist(allowlist)
    return NewServiceToken(
        name, scope, endpoints or None, allowlist or None,
        _timestamp(body, "tokenExpiryTimestamp"), _timestamp(body, "renewableUntilTimestamp"),
    )


def _scope(value: Any, offered: tuple[str, ...]) -> str:
    """A scope by its Commvault name, in any letter case."""
    found = next((s for s in SCOPES if isinstance(value, str) and value.casefold() == s.casefold()), None)
    if found is None:
        raise ServiceAccountProblem(f"scope must be one of {', '.join(SCOPES)}")
    if found not in offered:
        raise ServiceAccountProblem(f"this upstream offers no {found} tokens (offered: {', '.join(offered)})")
    return found


def lines_of(body: dict[str, Any], key: str) -> tuple[str, ...] | None:
    """A list of strings, or one string with an entry per line (as Commvault's form takes them)."""
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, str):
        value = [line.strip() for line in value.splitlines()]
        value = [line for line in value if line]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ServiceAccountProblem(f"{key} must be a list of non-empty strings, or a string with one entry per line")
    if len(value) > MAX_ENTRIES:
        raise ServiceAccountProblem(f"{key} holds at most {MAX_ENTRIES} entries")
    return tuple(v.strip() for v in value)


def _check_endpoints(endpoints: tuple[str, ...]) -> None:
    for number, endpoint in enumerate(endpoints, 1):
        try:
            if len(endpoint) > MAX_ENDPOINT:
                raise MalformedNarrowing("too long")
            path_prefixes_claim({"e": [endpoint]}, "e")
        except MalformedNarrowing:
            raise ServiceAccountProblem(
                f"apiEndpoints entry {number} is not a path labgate can match: it must start with '/', "
                f"without '%', '?', '#', '\\\\', spaces, empty, '.' or '..' segments, at most {MAX_ENDPOINT} characters"
            ) from None


def check_allowlist(entries: tuple[str, ...]) -> None:
    for number, entry in enumerate(entries, 1):
        try:
            parse_entry(entry)
        except InvalidAddress as exc:
            raise ServiceAccountProblem(
                f"ipAllowlist entry {number}: {exc}; write an address (10.0.0.1, 2001:db8::7334), a CIDR "
                f"(1.1.1.0/24, 2001:db8::/64) or a range (1.1.1.0 – 1.1.1.25, 2001:db8::1 - 2001:db8::ffff)"
            ) from None


def _timestamp(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ServiceAccountProblem(f"{key} must be a time in epoch seconds")
    return value


@dataclass(frozen=True)
class TokenPlan:
    """What to mint: the type, the access token's lifetime and, for a renewable token, until when it renews."""

    token_type: str
    access_lifetime: float
    renewable_until: float | None
    path_prefixes: tuple[str, ...] | None
    client_ips: tuple[str, ...] | None


def plan_token(new: NewServiceToken, token_type: str, pack: CompiledPack, issuer: IssuerSettings, now: float) -> TokenPlan:
    """Lifetimes for ``new`` from its scope, its type's lifetimes and the issuer's bound; ServiceAccountProblem if out of bounds."""
    lifetimes = pack.token_types[token_type].spec.lifetimes
    prefixes = ONE_TOUCH_PREFIXES if new.scope == ONE_TOUCH else new.api_endpoints
    if new.scope in FIXED_LIFETIMES or lifetimes.refresh_until is None:
        if new.renewable_until is not None:
            raise ServiceAccountProblem(
                f"{new.scope} tokens (type {token_type!r}) are not renewable: give tokenExpiryTimestamp, not renewableUntilTimestamp"
            )
        return TokenPlan(token_type, _fixed_lifetime(new, lifetimes, issuer, now), None, prefixes, new.ip_allowlist)
    access = token_terms(lifetimes, issuer).lifetime  # what each renewal at the token endpoint mints too
    if new.token_expiry is not None:
        if not now < new.token_expiry <= now + access:
            raise ServiceAccountProblem(
                f"tokenExpiryTimestamp must lie within the access token's lifetime ({access:g} s from now): "
                f"a {new.scope} token is kept alive by renewing it, until renewableUntilTimestamp"
            )
        access = new.token_expiry - now
    most = now + lifetimes.refresh_until
    # Whole seconds, as renewableUntilTimestamp shows it: renewing at the shown second is already too late.
    until = float(new.renewable_until) if new.renewable_until is not None else float(math.floor(most))
    if not now < until <= most:
        raise ServiceAccountProblem(
            f"renewableUntilTimestamp must be in the future and at most {lifetimes.refresh_until / DAY:g} days "
            f"from now (token type {token_type!r}: lifetimes.refresh_until); labgate renews no token forever"
        )
    return TokenPlan(token_type, access, until, prefixes, new.ip_allowlist)


def _fixed_lifetime(new: NewServiceToken, lifetimes: Lifetimes, issuer: IssuerSettings, now: float) -> float:
    """A token that is not renewable: 1-Touch and SCIM as the vendor has them, within the type's ttl."""
    if new.scope in FIXED_LIFETIMES:
        default, vendor_most = FIXED_LIFETIMES[new.scope]
        bounds = [lifetimes.ttl if lifetimes.ttl is not None else vendor_most, issuer.access_token_max_lifetime]
        most = min(bounds + ([lifetimes.absolute] if lifetimes.absolute is not None else []))
    else:  # a scope Commvault renews, mapped to a type that does not: one token of the type's lifetime
        default = most = token_terms(lifetimes, issuer).lifetime
    if new.token_expiry is None:
        return min(default, most)
    if not now < new.token_expiry <= now + most:
        raise ServiceAccountProblem(
            f"tokenExpiryTimestamp must be in the future and at most {most / DAY:g} days from now "
            f"(the token type's ttl and issuer.access_token_max_lifetime bound it)"
        )
    return new.token_expiry - now


# -- the stored record and what the API shows ---------------------------------------------


@dataclass(frozen=True)
class ServiceTokenRecord:
    """A service-account token as stored: never a token, only what revoking and listing it need.

    ``chain`` names the refresh chain of a renewable token (revoking it kills
    every access token renewed from it); ``access_fingerprint`` the first
    access token (a token that is not renewable has no other).
    """

    token_id: str
    name: str
    subject: str
    upstream: str
    scope: str
    token_type: str
    created_at: float
    expires_at: float  # the first access token's
    access_fingerprint: str
    api_endpoints: tuple[str, ...] | None = None
    ip_allowlist: tuple[str, ...] | None = None
    renewable_until: float | None = None
    chain: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> ServiceTokenRecord:
        """The record; MalformedRecord when it is not one."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or set(data) - set(cls.__dataclass_fields__):
                raise ValueError("unexpected fields")
            for key in ("api_endpoints", "ip_allowlist"):
                if data.get(key) is not None:
                    data[key] = tuple(data[key])
            return cls(**data)
        except (ValueError, TypeError) as exc:
            raise MalformedRecord(f"a stored {RECORD_KIND} record cannot be read") from exc

    def view(self) -> dict[str, Any]:
        """The token as a list shows it (Commvault's names, epoch seconds), never a secret."""
        shown: dict[str, Any] = {
            "accessTokenId": self.token_id,
            "tokenName": self.name,
            "scope": self.scope,
            "userId": self.subject,
            "upstream": self.upstream,
            "tokenType": self.token_type,
            "createdTimestamp": math.floor(self.created_at),
        }
        if self.renewable_until is not None:
            shown["renewableUntilTimestamp"] = math.floor(self.renewable_until)
        else:
            shown["tokenExpiryTimestamp"] = math.floor(self.expires_at)
        if self.api_endpoints is not None:
            shown["apiEndpoints"] = list(self.api_endpoints)
        if self.ip_allowlist is not None:
            shown["ipAllowlist"] = list(self.ip_allowlist)
        return shown

    def info(self, issued: IssuedTokens) -> dict[str, Any]:
        """Commvault's ``tokenInfo`` when the token was just created or renewed, with its secrets: shown this once."""
        info: dict[str, Any] = {**self.view(), "accessToken": issued.access.token, "tokenExpiryTimestamp": issued.access.expires_at}
        if issued.refresh_token is not None and self.renewable_until is not None:
            info["refreshToken"] = issued.refresh_token
            info["refreshTokenExpiryTimestamp"] = math.floor(self.renewable_until)
        return info
