"""The ``observe`` token source: opaque tokens the appliance issues, learned as they pass.

HPE SimpliVity hands out UUID tokens that only it can validate, yet an
emergency token must be held to six read-and-restore calls.  labgate passes
the appliance's own token endpoint through, reads the grant from the request
(``grant_type=emergency``, ``username``, ``client_id``) and, from a successful
answer, remembers ``sha256(access_token)`` -> token type in the store.  A
bearer token labgate never saw issued is refused (401 ``unknown_token``).

Only fingerprints are stored; passwords, client secrets and the tokens
themselves are never kept or logged.  This module is the pure part (what a
token request says, what an answer teaches); the gateway does the HTTP in
:mod:`proxy.gateway.token_endpoint`.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import time
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from cachetools import TLRUCache

from proxy.errors import LabgateError
from proxy.policy.model import RouteTemplate, parse_path_template
from proxy.reasons import Reason
from proxy.store.base import Store, StoreUnavailable, TokenRecord
from proxy.token_facts import (
    TokenFacts,
    TokenRejection,
    short_token_hash,
    token_fingerprint,
)
from proxy.tokens.matchers import TypeRule, pick_token_type

# Form fields a ``types`` matcher may look at: never a password, secret or token.
GRANT_FIELDS = ("grant_type", "username", "client_id", "scope", "realm", "audience", "resource")
MAX_TOKEN_REQUEST_BYTES = 64 * 1024
MAX_TOKEN_ANSWER_BYTES = 64 * 1024
MAX_FORM_FIELDS = 64
MAX_OPAQUE_TOKEN_LENGTH = 8192
# Refresh tokens are stored under their own key space, so that a refresh token
# presented as a bearer token can never be taken for an access token.
REFRESH_KEY_PREFIX = "refresh:"


@dataclass(frozen=True)
class ObserveSourceSettings:
    """An ``observe`` token source as configured.

    ``token_endpoint`` and ``revoke_endpoint`` are paths as the appliance sees
    them (the upstream's ``path_prefix`` already stripped).  A token is
    remembered until the appliance's ``expires_in``, but never longer than
    ``max_lifetime``; a refresh token for ``refresh_lifetime``.
    """

    token_endpoint: str
    type_rules: tuple[TypeRule, ...]
    revoke_endpoint: RouteTemplate | None = None
    max_lifetime: float = 86400.0
    refresh_lifetime: float = 90 * 86400.0
    cache_size: int = 10000
    cache_max_seconds: float = 60.0

    def __post_init__(self) -> None:
        if not self.type_rules:
            raise ValueError("map grants to at least one token type ('types')")
        if self.max_lifetime <= 0 or self.refresh_lifetime <= 0:
            raise ValueError("max_lifetime and refresh_lifetime must be positive")
        if self.cache_size < 1 or self.cache_max_seconds < 0:
            raise ValueError("cache size must be positive and cache max_seconds not negative")


class BadTokenRequest(LabgateError, ValueError):
    """The token request cannot be read unambiguously; the message never quotes a value."""

    reason = Reason.BAD_TOKEN_REQUEST


@dataclass(frozen=True)
class TokenRequest:
    """What a token request says, minus its secrets.

    ``grant`` holds only :data:`GRANT_FIELDS` (what matchers see);
    ``refresh_key`` is the store key of the refresh token it presents, if any.
    """

    grant: Mapping[str, str]
    refresh_key: str | None = None


def read_token_form(body: bytes, content_type: str, *, repeatable: frozenset[str] = frozenset()) -> dict[str, str]:
    """The parameters of a form-encoded token request, each exactly once (RFC 6749 section 3.2).

    A parameter sent twice is refused ("MUST NOT be included more than
    once"): two readers of the form could each take a different one.  Names
    in ``repeatable`` (RFC 8707's ``resource``, which "MAY" repeat) are left
    out: the caller reads them with :func:`repeated_values`.  Also used by
    labgate's own token endpoint (:mod:`proxy.issuer.token_endpoint`).
    """
    fields: dict[str, str] = {}
    for name, value in _form_pairs(body, content_type):
        if name in repeatable:
            continue
        if name in fields:
            raise BadTokenRequest(f"parameter {name[:32]!r} appears more than once")
        fields[name] = value
    return fields


def repeated_values(body: bytes, content_type: str, name: str) -> tuple[str, ...]:
    """Every value of a parameter that may appear more than once, in order."""
    return tuple(value for key, value in _form_pairs(body, content_type) if key == name)


def _form_pairs(body: bytes, content_type: str) -> list[tuple[str, str]]:
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type != "application/x-www-form-urlencoded":
        raise BadTokenRequest("a token request must be application/x-www-form-urlencoded")
    try:
        return urllib.parse.parse_qsl(
            body.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(body), errors="strict",
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError):
        raise BadTokenRequest("the token request body is not a valid form") from None


def read_token_request(body: bytes, content_type: str, basic_client_id: str | None) -> TokenRequest:
    """Parse a form-encoded token request (RFC 6749 sections 3.2, 4.3.2, 6).

    A parameter sent twice is refused (RFC 6749 section 3.2: "MUST NOT be
    included more than once"): labgate and the appliance could each read a
    different ``grant_type``.  The client id comes from HTTP Basic or the body;
    two different ones are refused too.
    """
    fields = read_token_form(body, content_type)
    if not fields.get("grant_type"):
        raise BadTokenRequest("the token request has no grant_type")
    if basic_client_id is not None:
        if fields.get("client_id", basic_client_id) != basic_client_id:
            raise BadTokenRequest("the client id in the body differs from the one in HTTP Basic")
        fields["client_id"] = basic_client_id
    grant = {name: fields[name] for name in GRANT_FIELDS if name in fields}
    refresh = fields.get("refresh_token") if fields["grant_type"] == "refresh_token" else None
    return TokenRequest(MappingProxyType(grant), REFRESH_KEY_PREFIX + token_fingerprint(refresh) if refresh else None)


@dataclass(frozen=True)
class GrantedAs:
    """The token type a grant yields, and whom the token will be for."""

    token_type: str
    subject: str | None
    client_id: str | None


@dataclass(frozen=True)
class IssuedTokens:
    """What a successful token answer handed out (as store keys, never the tokens)."""

    access_key: str
    expires_in: float | None
    refresh_key: str | None


def read_token_answer(body: bytes) -> IssuedTokens:
    """The tokens in a successful answer (RFC 6749 section 5.1); ValueError when there are none."""
    answer = json.loads(body)
    if not isinstance(answer, dict):
        raise ValueError("the token answer is not a JSON object")
    access = answer.get("access_token")
    if not isinstance(access, str) or not access or len(access) > MAX_OPAQUE_TOKEN_LENGTH:
        raise ValueError("the token answer has no usable access_token")
    refresh = answer.get("refresh_token")
    return IssuedTokens(
        access_key=token_fingerprint(access),
        expires_in=_seconds(answer.get("expires_in")),
        refresh_key=REFRESH_KEY_PREFIX + token_fingerprint(refresh) if isinstance(refresh, str) and refresh else None,
    )


def token_endpoint_segments(path: str) -> tuple[str | None, ...]:
    """The endpoint's segments as a request's would be; a trailing slash (HCP's ``/auth/oauth/``) is kept.

    Raises ValueError for a path a request could not match.
    """
    trailing = ("",) if path.endswith("/") and path != "/" else ()
    return parse_path_template(path.rstrip("/") or "/", what="token_endpoint", params=False) + trailing


def token_endpoint_spellings(segments: tuple[str | None, ...]) -> tuple[tuple[str | None, ...], ...]:
    """The endpoint with and without a trailing slash: the same appliance endpoint, so either teaches labgate the token."""
    if not segments:
        return (segments,)
    bare = segments[:-1] if segments[-1] == "" else segments
    return (bare, bare + ("",))


def _seconds(value: object) -> float | None:
    """A positive ``expires_in``; some appliances send the number as a string."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return None
    return float(value)


class ObserveSource:
    """Knows the tokens one appliance issued, through the shared store."""

    def __init__(
        self,
        settings: ObserveSourceSettings,
        store: Store,
        *,
        upstream: str,
        clock: Callable[[], float] = time.time,
        on_observed: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self._store = store
        self._upstream = upstream
        self._clock = clock
        self._on_observed = on_observed
        self.token_endpoint_segments = token_endpoint_segments(settings.token_endpoint)
        # HCP documents POST /auth/oauth and its clients send /auth/oauth/ too: both are the token endpoint.
        self.token_endpoint_spellings = token_endpoint_spellings(self.token_endpoint_segments)
        # Known tokens, briefly: revocations are checked on every request anyway
        # (proxy.tokens.state), and an entry never outlives the token's record.
        self._known: TLRUCache[str, TokenFacts] = TLRUCache(
            maxsize=settings.cache_size, ttu=self._cache_until, timer=clock
        )

    def _cache_until(self, _key: str, facts: TokenFacts, now: float) -> float:
        expires = facts.expires_at if facts.expires_at is not None else now
        return min(expires, now + self.settings.cache_max_seconds)

    def verify_here(self, token: str, fingerprint: str | None = None) -> TokenFacts | TokenRejection | None:
        """Always None: an observed token's verdict comes from :meth:`verify`."""
        return None

    async def verify(self, token: str) -> TokenFacts | TokenRejection:
        """The token's facts if the appliance issued it through labgate and it has not expired."""
        if len(token) > MAX_OPAQUE_TOKEN_LENGTH:
            return TokenRejection(Reason.MALFORMED_TOKEN, f"the token is longer than {MAX_OPAQUE_TOKEN_LENGTH} characters")
        key = token_fingerprint(token)
        cached = self._known.get(key)
        if cached is not None:
            return cached
        try:
            record = await self._store.get_token(key, self._clock())
        except StoreUnavailable:
            return TokenRejection(Reason.STORE_UNAVAILABLE, "token state cannot be checked right now")
        if record is None or record.upstream != self._upstream:
            # Never seen, expired, or issued by another appliance: a token is only good where it came from.
            return TokenRejection(Reason.UNKNOWN_TOKEN, "labgate has not seen this token issued by this appliance")
        facts = TokenFacts(
            token_type=record.token_type,
            token_hash=short_token_hash(token),
            subject=record.subject,
            expires_at=record.expires_at,
            issued_at=record.issued_at,
            claims=MappingProxyType({"client_id": record.client_id} if record.client_id else {}),
        )
        self._known[key] = facts
        return facts

    async def granted_as(self, request: TokenRequest) -> GrantedAs | None:
        """Whom and as which type a token from this request will be; None means the grant is not allowed.

        A refresh grant keeps the type, subject and client of the token it
        renews, when labgate saw that refresh token issued; otherwise the
        ``types`` rules decide.  Raises StoreUnavailable.
        """
        if request.refresh_key is not None:
            renewed = await self._store.get_token(request.refresh_key, self._clock())
            if renewed is not None and renewed.upstream == self._upstream:
                return GrantedAs(renewed.token_type, renewed.subject, renewed.client_id)
        token_type = pick_token_type(self.settings.type_rules, request.grant)
        if token_type is None:
            return None
        return GrantedAs(token_type, request.grant.get("username") or None, request.grant.get("client_id") or None)

    async def remember(self, granted: GrantedAs, issued: IssuedTokens) -> None:
        """Record what a successful token answer issued.  Raises StoreUnavailable."""
        now = self._clock()
        lifetime = min(issued.expires_in or self.settings.max_lifetime, self.settings.max_lifetime)
        token_type, subject, client_id = granted.token_type, granted.subject, granted.client_id
        await self._store.put_token(
            issued.access_key,
            TokenRecord(token_type, now, now + lifetime, self._upstream, subject, client_id, issued.refresh_key),
        )
        if issued.refresh_key is not None:
            await self._store.put_token(
                issued.refresh_key,
                TokenRecord(token_type, now, now + self.settings.refresh_lifetime, self._upstream, subject, client_id),
            )
        if self._on_observed is not None:
            self._on_observed(token_type)

    async def forget(self, token: str, facts: TokenFacts) -> None:
        """The appliance was asked to revoke the token: every replica refuses it from now on.

        The revocation record reaches replicas that cached the token within a
        second (:mod:`proxy.tokens.state`); dropping the record frees the store.
        Raises StoreUnavailable.
        """
        key = token_fingerprint(token)
        self._known.pop(key, None)
        await self._store.revoke("token", key, self._clock(), facts.expires_at)
        await self._store.drop_token(key)

    async def close(self) -> None:
        return None


def basic_client_id(authorization: str | None) -> str | None:
    """The client id of an HTTP Basic ``Authorization`` header (RFC 6749 section 2.3.1), if any.

    SimpliVity clients authenticate as ``simplivity:`` (empty secret).
    Anything that is not readable Basic yields None; the appliance judges it.
    """
    if authorization is None:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, _secret = decoded.partition(":")
    return urllib.parse.unquote_plus(user) if sep else None
