"""The ``introspect`` token source: ask the authorization server (RFC 7662).

For opaque tokens an identity provider can vouch for: labgate POSTs
``token=...`` to the introspection endpoint, authenticated as a client
(RFC 7662 section 2.1), and reads ``active`` plus the token's claims.  The
answer picks the token type with the same matchers a ``jwt`` source uses.

Answers are cached under (token fingerprint, endpoint): an active one until
its ``exp`` or ``cache.max_seconds``, whichever is first; an inactive one for
``cache.negative_seconds``.  The policy itself runs on every request, cached
or not.  An endpoint that cannot be asked fails closed: 503, never a pass.
"""

from __future__ import annotations

import asyncio
import json
import math
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

import aiohttp
from cachetools import TLRUCache
from yarl import URL

from proxy.errors import LabgateError
from proxy.reasons import Reason
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
from proxy.tokens.matchers import TypeRule, pick_token_type

if TYPE_CHECKING:
    from proxy.metrics import IntrospectionResult

MAX_ANSWER_BYTES = 64 * 1024
MAX_OPAQUE_TOKEN_LENGTH = 8192
_LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")

ClientAuth = Literal["basic", "post"]
Verdict = TokenFacts | TokenRejection


@dataclass(frozen=True)
class IntrospectSourceSettings:
    """An ``introspect`` token source as configured; the client secret never shows in a repr."""

    endpoint: str
    client_id: str
    client_secret: str = field(repr=False)
    type_rules: tuple[TypeRule, ...]
    client_auth: ClientAuth = "basic"
    subject_claim: str = "sub"
    path_prefixes_claim: str | None = None
    client_ips_claim: str | None = None
    timeout: float = 5.0
    verify_tls: bool = True
    ca_file: Path | None = None
    cache_size: int = 10000
    cache_max_seconds: float = 60.0
    cache_negative_seconds: float = 5.0

    def __post_init__(self) -> None:
        url = URL(self.endpoint)
        if not url.host or url.scheme not in ("http", "https"):
            raise ValueError("endpoint must be an https:// URL, e.g. https://idp.example/oauth2/introspect")
        # The token travels in the request body: TLS, or loopback only.
        if url.scheme != "https" and url.host not in _LOOPBACK_HOSTS:
            raise ValueError("endpoint must be https:// (plain http only on loopback)")
        if not self.client_id or not self.client_secret:
            raise ValueError("introspection needs a client_id and a client secret (RFC 7662 section 2.1)")
        if not self.type_rules:
            raise ValueError("map introspection answers to at least one token type ('types')")
        if self.cache_size < 1 or min(self.cache_max_seconds, self.cache_negative_seconds) < 0 or self.timeout <= 0:
            raise ValueError("cache size and timeout must be positive; cache times must not be negative")


class _Unavailable(LabgateError):
    """The endpoint could not be asked, or answered something that is not an introspection answer."""

    reason = Reason.INTROSPECTION_UNAVAILABLE


class IntrospectSource:
    """Asks one introspection endpoint about tokens for one upstream, with a bounded cache."""

    def __init__(
        self,
        settings: IntrospectSourceSettings,
        *,
        clock: Callable[[], float] = time.time,
        on_result: Callable[[IntrospectionResult], None] | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._on_result = on_result
        self._cache: TLRUCache[tuple[str, str], Verdict] = TLRUCache(
            maxsize=settings.cache_size, ttu=self._cache_until, timer=clock
        )
        # One question in flight per token, however many requests carry it.
        self._asking: dict[str, asyncio.Task[Verdict]] = {}
        self._session: aiohttp.ClientSession | None = None

    def _cache_until(self, _key: tuple[str, str], verdict: Verdict, now: float) -> float:
        if isinstance(verdict, TokenRejection):
            return now + self.settings.cache_negative_seconds
        expires = math.floor(verdict.expires_at) if verdict.expires_at is not None else math.inf
        return min(expires, now + self.settings.cache_max_seconds)

    def verify_here(self, token: str, fingerprint: str | None = None) -> TokenFacts | TokenRejection | None:
        """Always None: introspection answers, cached or not, come from :meth:`verify`."""
        return None

    async def verify(self, token: str) -> Verdict:
        if len(token) > MAX_OPAQUE_TOKEN_LENGTH:
            return TokenRejection(Reason.MALFORMED_TOKEN, f"the token is longer than {MAX_OPAQUE_TOKEN_LENGTH} characters")
        fingerprint = token_fingerprint(token)
        key = (fingerprint, self.settings.endpoint)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        asking = self._asking.get(fingerprint)
        if asking is None:
            # A task of its own: a client that goes away does not cancel the
            # question for the other requests waiting on the same token.
            asking = asyncio.create_task(self._introspect(token, key))
            self._asking[fingerprint] = asking
            asking.add_done_callback(lambda _done: self._asking.pop(fingerprint, None))
        return await asyncio.shield(asking)

    async def _introspect(self, token: str, key: tuple[str, str]) -> Verdict:
        """Ask, then cache the answer (an unreachable endpoint is never cached)."""
        try:
            answer = await self._ask(token)
        except _Unavailable as exc:
            self._count("error")
            return TokenRejection(Reason.INTROSPECTION_UNAVAILABLE, str(exc))
        verdict = self._verdict(token, answer)
        self._count("active" if isinstance(verdict, TokenFacts) else "inactive")
        self._cache[key] = verdict
        return verdict

    async def _ask(self, token: str) -> dict[str, Any]:
        """POST the token (RFC 7662 section 2.1) and return the JSON answer."""
        settings = self.settings
        form = {"token": token, "token_type_hint": "access_token"}
        headers = {"Accept": "application/json"}
        if settings.client_auth == "basic":
            # RFC 6749 section 2.3.1: id and secret are form-encoded before Basic.
            headers["Authorization"] = aiohttp.encode_basic_auth(
                urllib.parse.quote_plus(settings.client_id), urllib.parse.quote_plus(settings.client_secret)
            )
        else:
            form |= {"client_id": settings.client_id, "client_secret": settings.client_secret}
        try:
            async with self._client().post(settings.endpoint, data=form, headers=headers, allow_redirects=False) as response:
                if response.status != 200:
                    raise _Unavailable(f"the introspection endpoint answered {response.status}")
                body = bytearray()
                # The whole answer, however it is split on the wire, up to the bound.
                async for chunk in response.content.iter_chunked(16 * 1024):
                    body += chunk
                    if len(body) > MAX_ANSWER_BYTES:
                        raise _Unavailable("the introspection answer is too large")
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise _Unavailable(f"the introspection endpoint cannot be reached ({type(exc).__name__})") from None
        try:
            answer = json.loads(body)
        except (ValueError, RecursionError):
            raise _Unavailable("the introspection answer is not JSON") from None
        if not isinstance(answer, dict) or not isinstance(answer.get("active"), bool):
            raise _Unavailable("the introspection answer has no boolean 'active'")
        return answer

    def _verdict(self, token: str, answer: dict[str, Any]) -> Verdict:
        """Active, in time, of a known type, with readable narrowing claims: facts; otherwise why not."""
        if answer["active"] is not True:
            return TokenRejection(Reason.TOKEN_INACTIVE, "the authorization server says the token is not active")
        times: dict[str, float] = {}
        for name in ("exp", "iat", "nbf"):
            value = answer.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                return TokenRejection(Reason.MALFORMED_TOKEN, f"the introspection answer's {name!r} must be a number")
            times[name] = float(value)
        now = self._clock()
        if "exp" in times and times["exp"] <= now:
            return TokenRejection(Reason.TOKEN_EXPIRED, "the token has expired")
        if "nbf" in times and times["nbf"] > now:
            return TokenRejection(Reason.TOKEN_NOT_YET_VALID, "the token is not valid yet")
        settings = self.settings
        token_type = pick_token_type(settings.type_rules, answer)
        if token_type is None:
            return TokenRejection(Reason.NO_TOKEN_TYPE, "the token's introspection answer matches no token type of this upstream")
        try:
            prefixes = path_prefixes_claim(answer, settings.path_prefixes_claim)
            client_ips = client_ips_claim(answer, settings.client_ips_claim)
        except MalformedNarrowing as exc:
            return TokenRejection(Reason.MALFORMED_TOKEN, str(exc))
        subject = answer.get(settings.subject_claim)
        return TokenFacts(
            token_type=token_type,
            token_hash=short_token_hash(token),
            subject=subject if isinstance(subject, str) else None,
            expires_at=times.get("exp"),
            issued_at=times.get("iat"),
            claims=MappingProxyType(answer),
            path_prefixes=prefixes,
            client_ips=client_ips,
        )

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None:
            settings = self.settings
            tls: ssl.SSLContext | bool = True
            if not settings.verify_tls:
                tls = False
            elif settings.ca_file is not None:
                tls = ssl.create_default_context(cafile=str(settings.ca_file))
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=tls, limit=64),
                timeout=aiohttp.ClientTimeout(total=settings.timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._session

    def _count(self, result: IntrospectionResult) -> None:
        if self._on_result is not None:
            self._on_result(result)

    async def close(self) -> None:
        for asking in list(self._asking.values()):
            asking.cancel()
        if self._session is not None:
            await self._session.close()
            self._session = None
