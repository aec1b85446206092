"""The ``jwt`` token source: verify a JWS with pinned keys, then pick its token type.

The checks follow RFC 8725 (JWT best current practices): the algorithm comes
from configuration and the key, never from the token (section 3.1); ``none``
is never accepted; ``crit`` extensions we do not understand are refused
(RFC 7515 section 4.1.11); ``jku``/``x5u``/``jwk``/``x5c`` headers are never
used to find or fetch a key (RFC 8725 section 3.10: a token must not choose who vouches
for it); claims are checked only after the signature.

Verified tokens are cached by their sha256 until their own ``exp`` (or the
configured maximum, whichever is first): a hit costs a few microseconds, a
full HS256 check some 200 µs and an RSA one more.  Only the token's verdict is
cached; the policy runs on every request.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import jwt
from cachetools import TLRUCache
from yarl import URL

from proxy.errors import LabgateError
from proxy.metric_tallies import CacheLookups
from proxy.reasons import Reason
from proxy.strict_json import no_duplicate_names
from proxy.token_facts import (
    TokenFacts,
    TokenRejection,
    short_token_hash,
    token_fingerprint,
)
from proxy.token_narrowing import (
    MalformedNarrowing,
    client_ips_claim,
    path_prefixes_claim,
)
from proxy.tokens.jwks import JwksCache
from proxy.tokens.matchers import TypeRule, pick_token_type
from proxy.verification_keys import ALGORITHM_FAMILIES, KeySet, KeysUnavailable, VerificationKey

DEFAULT_MAX_TOKEN_BYTES = 4096
# RFC 7515 section 7.1 compact serialization, unpadded base64url (section 2).  The
# signature may be empty here only so that an unsigned ``alg: none`` token is
# reported as the algorithm attack it is; an empty signature never verifies.
_COMPACT_JWS = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*")
_LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


@dataclass(frozen=True)
class JwtSourceSettings:
    """A ``jwt`` token source as configured; validated on construction.

    ``external_keys``: the keys come from a :class:`KeySet` handed to
    :class:`JwtSource` (labgate's own key ring, for the ``issuer`` source).
    """

    algorithms: tuple[str, ...]
    static_keys: tuple[VerificationKey, ...] = ()
    jwks_url: str | None = None
    jwks_min_refetch_interval: float = 30.0
    jwks_max_age: float = 300.0
    issuer: str | None = None
    audience: tuple[str, ...] = ()
    leeway: float = 30.0
    required_claims: tuple[str, ...] = ()
    expected_typ: str | None = None
    type_rules: tuple[TypeRule, ...] = ()
    subject_claim: str = "sub"
    path_prefixes_claim: str | None = None
    client_ips_claim: str | None = None
    cache_size: int = 10000
    cache_max_seconds: float = 300.0
    external_keys: bool = False
    # Refused before any signature work: verifying costs CPU a token's sender does not pay.
    max_token_bytes: int = DEFAULT_MAX_TOKEN_BYTES

    def __post_init__(self) -> None:
        if not self.algorithms:
            raise ValueError("pin at least one algorithm")
        for alg in self.algorithms:
            if alg not in ALGORITHM_FAMILIES:
                raise ValueError(f"algorithm {alg!r} is not supported")
        if not self.static_keys and not self.jwks_url and not self.external_keys:
            raise ValueError("give 'keys' or a 'jwks_url' (or both)")
        for key in self.static_keys:
            if key.algorithm not in self.algorithms:
                raise ValueError(f"key {key.kid or '(no kid)'} is for {key.algorithm}, which is not in 'algorithms'")
        if self.jwks_url:
            url = URL(self.jwks_url)
            if not url.host:
                raise ValueError("jwks_url needs a host, e.g. https://idp.example/.well-known/jwks.json")
            # Whoever can alter the key set in transit can mint tokens: TLS, or loopback only.
            if url.scheme != "https" and not (url.scheme == "http" and url.host in _LOOPBACK_HOSTS):
                raise ValueError("jwks_url must be https:// (plain http only on loopback)")
            if all(ALGORITHM_FAMILIES[a] == "hmac" for a in self.algorithms):
                raise ValueError("a jwks_url needs a public-key algorithm pinned (a key set never supplies HMAC secrets)")
        if not self.type_rules:
            raise ValueError("map claims to at least one token type ('types')")
        if self.cache_size < 1 or self.cache_max_seconds < 0 or self.leeway < 0:
            raise ValueError("cache size must be positive; cache max_seconds and leeway must not be negative")


class _Rejected(LabgateError):
    """Ends verification early; carries the rejection (whose detail never quotes the token)."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail, reason)
        self.rejection = TokenRejection(reason, detail)


# PyJWT's exceptions, most specific first, mapped to reason codes.
_PYJWT_REASONS: tuple[tuple[type[Exception], Reason, str], ...] = (
    (jwt.ExpiredSignatureError, Reason.TOKEN_EXPIRED, "the token has expired"),
    (jwt.ImmatureSignatureError, Reason.TOKEN_NOT_YET_VALID, "the token is not valid yet"),
    (jwt.InvalidIssuerError, Reason.WRONG_ISSUER, "the token was issued by another issuer"),
    (jwt.InvalidAudienceError, Reason.WRONG_AUDIENCE, "the token is meant for another audience"),
    (jwt.InvalidSignatureError, Reason.BAD_SIGNATURE, "the token signature does not verify"),
    (jwt.InvalidAlgorithmError, Reason.ALGORITHM_NOT_ALLOWED, "the token's algorithm is not allowed"),
)


# Tokens in the front dict of the verified-token cache (JwtSource._recent).
_RECENT_TOKENS = 256


def _entry_expires(_key: str, entry: tuple[TokenFacts, float], _now: float) -> float:
    return entry[1]


class _VerifiedTokens(TLRUCache[str, tuple[TokenFacts, float]]):
    """Verified tokens by fingerprint, each with the time it expires at; what it evicts leaves the front dict too.

    The front dict checks expiry itself, so only evictions by size need telling:
    an entry is never served from the front once the cache has dropped it.
    Hits served from the front do not refresh an entry's place in the cache's
    LRU order: past ``cache_size`` tokens, a busy one may be verified again sooner.
    """

    def __init__(self, maxsize: int, timer: Callable[[], float], front: dict[str, tuple[TokenFacts, float]]) -> None:
        super().__init__(maxsize=maxsize, ttu=_entry_expires, timer=timer)
        self._front = front

    def popitem(self) -> tuple[str, tuple[TokenFacts, float]]:
        key, entry = super().popitem()
        self._front.pop(key, None)
        return key, entry


class JwtSource:
    """Verifies bearer JWTs for one upstream and says which token type each is."""

    def __init__(
        self,
        settings: JwtSourceSettings,
        *,
        on_cache: Callable[[bool], None] | None = None,
        on_fetch: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.time,
        keys: KeySet | None = None,
    ) -> None:
        """``keys``: the key set of ``external_keys`` settings; its owner closes it, not this source."""
        if settings.external_keys != (keys is not None):
            raise ValueError("give a key set exactly when the settings say external_keys")
        self.settings = settings
        self._clock = clock
        self._on_cache = on_cache
        # Hits counted without a call when the metrics count later (a single process): see CacheLookups.
        self._hits = on_cache.hits if isinstance(on_cache, CacheLookups) else None
        # The tokens seen most lately, in front of the cache: one dict lookup and one clock read
        # instead of the cache's own bookkeeping (its timer, its LRU order) on every request.
        self._recent: dict[str, tuple[TokenFacts, float]] = {}
        self._cache = _VerifiedTokens(settings.cache_size, clock, self._recent)
        self._owns_keys = keys is None
        self._jwks: KeySet | None = keys if keys is not None else (
            JwksCache(
                settings.jwks_url,
                algorithms=settings.algorithms,
                min_refetch_interval=settings.jwks_min_refetch_interval,
                max_age=settings.jwks_max_age,
                on_fetch=on_fetch,
            )
            if settings.jwks_url
            else None
        )

    def _cache_until(self, _key: str, facts: TokenFacts, now: float) -> float:
        """Never past the token's own ``exp``: the leeway is for clock skew, not for caching.

        Floored because PyJWT compares ``int(exp)``: a cached ``exp: 100.9`` must
        not outlive what a fresh check at 100.5 would refuse.
        """
        expires = math.floor(facts.expires_at) if facts.expires_at is not None else now
        return min(expires, now + self.settings.cache_max_seconds)

    async def verify(self, token: str) -> TokenFacts | TokenRejection:
        """The token's facts, or why it is refused; the first failing check decides the reason.

        Order: cache, shape, header, key, payload JSON, signature and claims, token
        type, narrowing claims.  Nothing from the token reaches a detail string.
        """
        cached = self.verify_here(token)
        if cached is not None:
            return cached
        if self._on_cache:
            self._on_cache(False)
        fingerprint = token_fingerprint(token)
        try:
            facts = await self._verify(token)
        except _Rejected as rejected:
            return rejected.rejection
        # The time is taken before the cache takes its own: the front dict never outlives the cache's entry.
        entry = (facts, self._cache_until(fingerprint, facts, self._clock()))
        self._cache[fingerprint] = entry  # TLRUCache skips an entry whose time is already up
        self._remember(fingerprint, entry)
        return facts

    def verify_here(self, token: str, fingerprint: str | None = None) -> TokenFacts | None:
        """The facts of a token verified before and still cached, without an await (a hit is counted).

        None: not cached (nothing counted); :meth:`verify` checks it, and counts the miss.
        ``fingerprint``: the token's, when the caller has it already (not hashed again).
        """
        fingerprint = token_fingerprint(token) if fingerprint is None else fingerprint
        entry = self._recent.get(fingerprint)
        if entry is None or self._clock() >= entry[1]:
            entry = self._cache.get(fingerprint)  # None once its time is up, as in the cache itself
            if entry is None:
                return None
            self._remember(fingerprint, entry)
        if self._hits is not None:
            self._hits.pending += 1
        elif self._on_cache:
            self._on_cache(True)
        return entry[0]

    def _remember(self, fingerprint: str, entry: tuple[TokenFacts, float]) -> None:
        """In the front dict; bounded: emptied when full (the cache behind it still holds every entry)."""
        if len(self._recent) >= _RECENT_TOKENS:
            self._recent.clear()
        self._recent[fingerprint] = entry

    async def _verify(self, token: str) -> TokenFacts:
        if len(token) > self.settings.max_token_bytes:
            raise _Rejected(Reason.TOKEN_TOO_LARGE, f"the token is larger than {self.settings.max_token_bytes} bytes")
        if not _COMPACT_JWS.fullmatch(token):
            raise _Rejected(Reason.MALFORMED_TOKEN, "the token is not a compact JWS (header.payload.signature)")
        header = self._header(token)
        alg = header["alg"]
        if token.endswith("."):
            raise _Rejected(Reason.MALFORMED_TOKEN, "the token is unsigned")
        key = await self._key(header.get("kid"), alg)
        payload = _check_strict_json(token, 1, "payload")
        _check_time_claims(payload)
        claims = self._decode(token, key, alg)
        return self._facts(token, claims)

    def _header(self, token: str) -> dict[str, Any]:
        _check_strict_json(token, 0, "header")
        try:
            header = jwt.get_unverified_header(token)
        except (jwt.InvalidTokenError, RecursionError):
            # Not JSON, or a 'crit' header PyJWT already refuses (RFC 7515 section 4.1.11).
            raise _Rejected(Reason.MALFORMED_TOKEN, "the token header is malformed or needs unsupported extensions") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.settings.algorithms:
            # 'none' and every algorithm not pinned for this source.
            raise _Rejected(Reason.ALGORITHM_NOT_ALLOWED, "the token's algorithm is not allowed for this upstream")
        if "crit" in header:
            raise _Rejected(Reason.MALFORMED_TOKEN, "the token requires header extensions labgate does not support")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise _Rejected(Reason.MALFORMED_TOKEN, "the token's kid must be a string")
        expected = self.settings.expected_typ
        if expected is not None and _media_type(header.get("typ")) != _media_type(expected):
            raise _Rejected(Reason.MALFORMED_TOKEN, f"the token's typ must be {expected!r}")
        return header

    async def _key(self, kid: str | None, alg: str) -> VerificationKey:
        for key in self.settings.static_keys:
            if key.algorithm == alg and (key.kid is None or key.kid == kid):
                return key
        if self._jwks is not None:
            try:
                found = await self._jwks.get(kid, alg)
            except KeysUnavailable:
                raise _Rejected(Reason.KEYS_UNAVAILABLE, "the signing keys cannot be fetched right now") from None
            if found is not None:
                return found
        raise _Rejected(Reason.UNKNOWN_KEY, "no key for the token's kid and algorithm")

    def _decode(self, token: str, key: VerificationKey, alg: str) -> dict[str, Any]:
        settings = self.settings
        required = ["exp", *settings.required_claims]
        required += ["iss"] if settings.issuer else []
        required += ["aud"] if settings.audience else []
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                issuer=settings.issuer,
                audience=list(settings.audience) or None,
                leeway=settings.leeway,
                options={"require": required, "verify_aud": bool(settings.audience)},
            )
        except jwt.MissingRequiredClaimError as exc:
            raise _Rejected(Reason.MISSING_CLAIM, f"the token lacks the {exc.claim!r} claim") from None
        except jwt.PyJWTError as exc:
            for kind, reason, detail in _PYJWT_REASONS:
                if isinstance(exc, kind):
                    raise _Rejected(reason, detail) from None
            # Every other InvalidTokenError (bad iat, non-string sub or jti, ...);
            # PyJWT's own message is not passed on: it may quote the token.
            raise _Rejected(Reason.MALFORMED_TOKEN, "the token's claims are malformed") from None
        return claims

    def _facts(self, token: str, claims: dict[str, Any]) -> TokenFacts:
        settings = self.settings
        token_type = pick_token_type(settings.type_rules, claims)
        if token_type is None:
            raise _Rejected(Reason.NO_TOKEN_TYPE, "the token's claims match no token type of this upstream")
        subject = claims.get(settings.subject_claim)
        try:
            prefixes = path_prefixes_claim(claims, settings.path_prefixes_claim)
            client_ips = client_ips_claim(claims, settings.client_ips_claim)
        except MalformedNarrowing as exc:
            raise _Rejected(Reason.MALFORMED_TOKEN, str(exc)) from None
        return TokenFacts(
            token_type=token_type,
            token_hash=short_token_hash(token),
            subject=subject if isinstance(subject, str) else None,
            expires_at=float(claims["exp"]),
            issued_at=float(claims["iat"]) if "iat" in claims else None,
            claims=MappingProxyType(claims),
            path_prefixes=prefixes,
            client_ips=client_ips,
        )

    async def close(self) -> None:
        if self._jwks is not None and self._owns_keys:
            await self._jwks.close()


def _media_type(value: object) -> str | None:
    """RFC 8725 section 3.11 / RFC 7515 4.1.9: ``at+jwt`` and ``application/at+jwt`` are one type."""
    if not isinstance(value, str):
        return None
    value = value.lower()
    return value[len("application/") :] if value.startswith("application/") else value


def _check_strict_json(token: str, index: int, part: str) -> dict[str, Any]:
    """Refuse what PyJWT's parser would let through but another parser could read differently.

    Duplicate names, in the JOSE header (``alg`` twice) or the claims: RFC 7515
    section 4 and RFC 7519 section 4 say to reject them or keep the last, and
    RFC 8259 section 4 calls their meaning unpredictable; an issuer, a WAF and
    labgate reading different ``alg`` or ``role`` values is the attack.
    ``NaN``/``Infinity`` are not JSON (RFC 8259 section 6); deep nesting would
    end in a RecursionError rather than a 401.
    """
    segment = token.split(".")[index]
    try:
        raw = base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))
        value = json.loads(raw, object_pairs_hook=no_duplicate_names, parse_constant=_no_constant)
    except (binascii.Error, ValueError, RecursionError):
        raise _Rejected(Reason.MALFORMED_TOKEN, f"the token {part} is not a JSON object without duplicate names") from None
    if not isinstance(value, dict):
        raise _Rejected(Reason.MALFORMED_TOKEN, f"the token {part} must be a JSON object")
    return value


def _check_time_claims(payload: dict[str, Any]) -> None:
    for name in ("exp", "nbf", "iat"):
        # PyJWT reads true as 1 and "2999999999" as a number; neither is a NumericDate.
        value = payload.get(name)
        if name in payload and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise _Rejected(Reason.MALFORMED_TOKEN, f"the token's {name!r} must be a number")


def _no_constant(name: str) -> Any:
    raise ValueError("not JSON")


