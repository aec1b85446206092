"""An OAuth login labgate performs at the appliance's token endpoint, then holds and renews.

labgate logs in on the first request that needs the credential (RFC 6749
section 4.3 ``password`` or 4.4 ``client_credentials`` grant, the client
authenticated with Basic or in the form, section 2.3.1), holds the access
token and forwards every request with ``Authorization: Bearer <it>``.

* Renewal: from ``renew_at`` (``expires_in`` minus the renew margin) the
  first request starts a new login in the background and still goes out with
  the held token, which is valid until ``expires_at``; only a request that
  finds no valid token waits.  One login is in flight at a time, however
  many requests wait for it.
* A 401 from the appliance to a forwarded request drops the held token, so
  the next request logs in again.  The refused request is not replayed: its
  body is already spent, and replaying a POST is not ours to decide.
* A failed login is tried again at the earliest 1 s later, doubling up to a
  minute while it keeps failing: an appliance that locks an account after a
  few wrong passwords must not see one attempt per request.  Meanwhile
  requests that need a login are refused at once.

Refresh tokens in an answer are ignored: labgate holds the password or client
secret and simply logs in again.  Nothing here logs or reports a token, a
password or a client secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import ssl
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

import aiohttp

from proxy.credentials.base import CredentialUnavailable
from proxy.credentials.settings import OAuthCredentialSettings
from proxy.errors import LabgateError
from proxy.reasons import Reason

logger = logging.getLogger("labgate")

MAX_ANSWER_BYTES = 64 * 1024
MAX_TOKEN_LENGTH = 16384
# An answer without ``expires_in`` (RFC 6749 section 5.1: only RECOMMENDED) is held this long.
UNSTATED_LIFETIME = 300.0
FIRST_RETRY = 1.0
MAX_RETRY = 60.0
_HEADER_SAFE = re.compile(r"[\x21-\x7e]+")


@dataclass(frozen=True)
class HeldToken:
    """The access token being forwarded with, as its header value; times on the credential's clock."""

    authorization: str = field(repr=False)
    renew_at: float
    expires_at: float


class LoginFailed(LabgateError):
    """The token endpoint could not be asked, refused, or answered something unusable; never says what was sent."""

    reason = Reason.UPSTREAM_CREDENTIAL_UNAVAILABLE


class OAuthCredential:
    """One upstream's login: holds at most one access token, renews it, logs in again after a 401."""

    after_rejection = "the next request logs in again"

    def __init__(
        self,
        settings: OAuthCredentialSettings,
        *,
        upstream: str,
        tls: ssl.SSLContext | bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``tls``: how to verify the token endpoint (see :func:`proxy.gateway.credentials_open.token_endpoint_tls`)."""
        self.settings = settings
        self._upstream = upstream
        self._tls = tls
        self._clock = clock
        self._held: HeldToken | None = None
        self._used_at = 0.0
        self._logging_in: asyncio.Task[HeldToken | LoginFailed] | None = None
        self._failures = 0
        self._retry_at = 0.0
        self._last_failure = ""
        self._http: aiohttp.ClientSession | None = None

    def __repr__(self) -> str:
        return f"OAuthCredential({self.settings.grant}, upstream={self._upstream!r})"

    async def authorization(self) -> str:
        now = self._clock()
        held = self._valid(now)
        if held is not None:
            self._used_at = now
            if now >= held.renew_at:
                self._log_in(now)  # in the background: this request still goes with the valid token
            return held.authorization
        logging_in = self._log_in(now)
        if logging_in is None:
            raise CredentialUnavailable(
                f"the last login at upstream {self._upstream!r}'s token endpoint failed ({self._last_failure}); "
                f"the next attempt is in {math.ceil(self._retry_at - now)} s"
            )
        # Shielded: a client that goes away does not cancel the login the others wait for.
        outcome = await asyncio.shield(logging_in)
        if isinstance(outcome, LoginFailed):
            raise CredentialUnavailable(f"labgate could not log in at upstream {self._upstream!r}'s token endpoint ({outcome.detail})")
        return outcome.authorization

    def rejected(self, authorization: str) -> None:
        """Drop the held token if it is the one refused (a newer one may already have replaced it)."""
        if self._held is not None and self._held.authorization == authorization:
            self._held = None
            logger.warning("upstream %s refused labgate's access token (401): the next request logs in again", self._upstream)

    def _valid(self, now: float) -> HeldToken | None:
        held = self._held
        if held is None:
            return None
        idle = self.settings.idle_timeout
        if now >= held.expires_at or (idle is not None and now - self._used_at >= idle):
            self._held = None
            return None
        return held

    def _log_in(self, now: float) -> asyncio.Task[HeldToken | LoginFailed] | None:
        """The login in flight, or a new one; None while a failed one waits to be tried again."""
        if self._logging_in is None:
            if now < self._retry_at:
                return None
            self._logging_in = asyncio.create_task(self._login())
        return self._logging_in

    async def _login(self) -> HeldToken | LoginFailed:
        try:
            held = await self._ask()
        except LoginFailed as exc:
            self._failures += 1
            wait = min(MAX_RETRY, FIRST_RETRY * 2 ** min(self._failures - 1, 16))
            self._retry_at = self._clock() + wait
            self._last_failure = exc.detail
            logger.warning(
                "upstream %s: login at its token endpoint failed (%s); next attempt in %g s at the earliest",
                self._upstream, exc.detail, wait,
            )
            return exc
        finally:
            self._logging_in = None
        self._failures, self._retry_at = 0, 0.0
        self._held, self._used_at = held, self._clock()
        logger.info("upstream %s: logged in at its token endpoint", self._upstream)
        return held

    async def _ask(self) -> HeldToken:
        """POST the grant (RFC 6749 sections 4.3.2, 4.4.2) and read the answer (section 5.1)."""
        settings = self.settings
        form: list[tuple[str, str]] = [("grant_type", settings.grant)]
        if settings.grant == "password":
            assert settings.username is not None and settings.password is not None  # checked by the settings
            form += [("username", settings.username), ("password", settings.password)]
        if settings.scope:
            form.append(("scope", settings.scope))
        form += settings.parameters
        headers = {"Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"}
        if settings.client_id:
            if settings.client_auth == "basic":
                # Section 2.3.1: id and secret are form-encoded before Basic; a public client's secret is empty.
                headers["Authorization"] = aiohttp.encode_basic_auth(
                    urllib.parse.quote_plus(settings.client_id), urllib.parse.quote_plus(settings.client_secret or "")
                )
            else:
                form.append(("client_id", settings.client_id))
                if settings.client_secret:
                    form.append(("client_secret", settings.client_secret))
        started = self._clock()
        try:
            async with self._client().post(
                settings.token_url, data=urllib.parse.urlencode(form), headers=headers, allow_redirects=False
            ) as response:
                if response.status != 200:
                    raise LoginFailed(f"the token endpoint answered {response.status}")
                body = await _bounded_body(response)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            raise LoginFailed(f"the token endpoint cannot be reached ({type(exc).__name__})") from None
        return self._held_token(body, started)

    def _held_token(self, body: bytes, started: float) -> HeldToken:
        """A usable bearer access token and its lifetime, counted from when the login was sent."""
        try:
            answer = json.loads(body)
        except (ValueError, RecursionError):
            raise LoginFailed("the token answer is not JSON") from None
        if not isinstance(answer, dict):
            raise LoginFailed("the token answer is not a JSON object")
        token = answer.get("access_token")
        if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH or not _HEADER_SAFE.fullmatch(token):
            raise LoginFailed("the token answer has no usable access_token")
        token_type = answer.get("token_type")
        if token_type is not None and (not isinstance(token_type, str) or token_type.lower() != "bearer"):
            raise LoginFailed("the token answer's token_type is not Bearer")
        lifetime = _lifetime(answer.get("expires_in"))
        expires_at = started + lifetime
        return HeldToken("Bearer " + token, expires_at - self.settings.renew_margin(lifetime), expires_at)

    def _client(self) -> aiohttp.ClientSession:
        if self._http is None:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._tls, limit=4),
                timeout=aiohttp.ClientTimeout(total=self.settings.timeout),
                cookie_jar=aiohttp.DummyCookieJar(),
            )
        return self._http

    async def close(self) -> None:
        logging_in = self._logging_in
        if logging_in is not None:
            logging_in.cancel()
            await asyncio.gather(logging_in, return_exceptions=True)
        if self._http is not None:
            await self._http.close()
            self._http = None


async def _bounded_body(response: aiohttp.ClientResponse) -> bytes:
    body = bytearray()
    async for chunk in response.content.iter_any():
        body += chunk
        if len(body) > MAX_ANSWER_BYTES:
            raise LoginFailed("the token answer is too large")
    return bytes(body)


def _lifetime(value: object) -> float:
    """``expires_in`` in seconds (some appliances send a string); unstated or unreadable: 5 minutes."""
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        return UNSTATED_LIFETIME
    return float(value)
