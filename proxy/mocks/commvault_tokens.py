"""Commvault service-account access tokens: scopes, lifetimes and the renewal chain, for the mock Commvault.

The rules (Commvault's documentation, 'Creating an access token for a service
account', and its access-token REST API):

* ``tokenType`` 0 or 2 is scope All, 1 Microsoft SCIM, 3 Custom (the token's
  own ``apiEndpoints``), 4 1-Touch recovery, 5 Hyperscale (cvpysdk's
  ``create_access_token`` lists these values).
* All, Custom and Hyperscale tokens come with a refresh token.  The access token lives 30
  minutes (2 hours in 11.44: a parameter); renewing hands out a new pair, up to
  14 days after the access token expired and never after
  ``renewableUntilTimestamp`` (default 90 days after creation; 0 means forever).
* Presenting an access/refresh pair that was already renewed away means the
  pair leaked: the whole chain dies (RFC 9700 section 4.14.2 behaviour).
* SCIM tokens live 30 days (at most 365), 1-Touch tokens 7 days (at most 14);
  neither has a refresh token, and neither can be renewed.

Timestamps are epoch seconds, as the API shows them.  This module holds no
HTTP; :mod:`proxy.mocks.commvault` serves it.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

ALL, MS_SCIM, ALL_TOO, CUSTOM, ONE_TOUCH, HYPERSCALE = 0, 1, 2, 3, 4, 5
TOKEN_TYPES = (ALL, MS_SCIM, ALL_TOO, CUSTOM, ONE_TOUCH, HYPERSCALE)
RENEWABLE_TYPES = (ALL, ALL_TOO, CUSTOM, HYPERSCALE)
FIXED_LIFETIMES = {MS_SCIM: (30 * 86400, 365 * 86400), ONE_TOUCH: (7 * 86400, 14 * 86400)}  # default, most
DAY = 86400
RENEW_GRACE = 14 * DAY
DEFAULT_RENEWABLE = 90 * DAY
DEFAULT_ACCESS_LIFETIME = 30 * 60  # 2 hours in Commvault 11.44: a constructor parameter


@dataclass
class TokenChain:
    """One access token as created, with every pair its renewals handed out."""

    id: int
    name: str
    username: str
    user_id: int
    token_type: int
    api_endpoints: list[str]
    created_at: float
    renewable_until: float | None  # None: renewable forever (or, for SCIM and 1-Touch, not at all)
    access: str
    access_expires: float
    refresh: str | None
    refresh_expires: float | None
    retired: set[str] = field(default_factory=set)  # earlier access and refresh tokens of this chain
    dead: bool = False

    def info(self, *, secrets_too: bool) -> dict[str, Any]:
        """The ``tokenInfo`` object; the tokens themselves only when just created or renewed."""
        body: dict[str, Any] = {
            "accessTokenId": self.id,
            "tokenName": self.name,
            "tokenType": self.token_type,
            "userId": self.user_id,
            "tokenExpiryTimestamp": int(self.access_expires),
            "renewableUntilTimestamp": int(self.renewable_until) if self.renewable_until is not None else 0,
            "apiEndpoints": list(self.api_endpoints),
        }
        if self.refresh_expires is not None:
            body["refreshTokenExpiryTimestamp"] = int(self.refresh_expires)
        if secrets_too:
            body["accessToken"] = self.access
            if self.refresh is not None:
                body["refreshToken"] = self.refresh
        return body


@dataclass(frozen=True)
class Refusal:
    """Why a create, edit or renewal was refused, with the status the mock answers."""

    status: int
    message: str


class AccessTokenBook:
    """Every access token of every service account, and the rules that govern them."""

    def __init__(self, *, access_lifetime: float, clock: Callable[[], float]) -> None:
        self.access_lifetime = access_lifetime
        self.clock = clock
        self.chains: dict[int, TokenChain] = {}
        self._next_id = 1

    def current(self, access: str) -> TokenChain | None:
        """The chain whose current access token this is (expired or not), unless the chain died."""
        return next((c for c in self.chains.values() if not c.dead and secrets.compare_digest(c.access, access)), None)

    def create(self, username: str, user_id: int, request: Any) -> TokenChain | Refusal:
        if not isinstance(request, dict):
            return Refusal(400, "The request body must be a JSON object")
        name, kind = request.get("tokenName"), request.get("tokenType", ALL)
        if not isinstance(name, str) or not name.strip():
            return Refusal(400, "tokenName is required")
        if isinstance(kind, bool) or kind not in TOKEN_TYPES:
            return Refusal(400, "tokenType must be 0 or 2 (All), 1 (Microsoft SCIM), 3 (Custom), 4 (1-Touch recovery) or 5 (Hyperscale)")
        endpoints = request.get("apiEndpoints", [])
        if not isinstance(endpoints, list) or not all(isinstance(e, str) and e.startswith("/") for e in endpoints):
            return Refusal(400, "apiEndpoints must be a list of paths starting with /")
        if kind == CUSTOM and not endpoints:
            return Refusal(400, "A token of the Custom scope needs its apiEndpoints")
        now = self.clock()
        if kind in FIXED_LIFETIMES:
            return self._create_fixed(name, username, user_id, kind, request.get("tokenExpiryTimestamp"), now)
        until = request.get("renewableUntilTimestamp", now + DEFAULT_RENEWABLE)
        if isinstance(until, bool) or not isinstance(until, (int, float)) or (until != 0 and until <= now):
            return Refusal(400, "renewableUntilTimestamp must be a time in the future, or 0 for forever")
        chain = TokenChain(self._take_id(), name, username, user_id, kind, endpoints if kind == CUSTOM else [], now,
                           None if until == 0 else float(until), "", 0.0, None, None)
        self._new_pair(chain, now)
        self.chains[chain.id] = chain
        return chain

    def _create_fixed(self, name: str, username: str, user_id: int, kind: int, expiry: Any, now: float) -> TokenChain | Refusal:
        default, most = FIXED_LIFETIMES[kind]
        expires = now + default if expiry is None else expiry
        if isinstance(expires, bool) or not isinstance(expires, (int, float)) or not now < expires <= now + most:
            return Refusal(400, f"tokenExpiryTimestamp must be in the future and at most {most // DAY} days away")
        chain = TokenChain(self._take_id(), name, username, user_id, kind, [], now, None,
                           secrets.token_urlsafe(48), float(expires), None, None)
        self.chains[chain.id] = chain
        return chain

    def edit(self, chain: TokenChain, request: Any) -> Refusal | None:
        """Rename, change the Custom endpoints or the renewal limit; None when done."""
        if not isinstance(request, dict):
            return Refusal(400, "The request body must be a JSON object")
        name = request.get("tokenName", chain.name)
        endpoints = request.get("apiEndpoints", chain.api_endpoints)
        until = request.get("renewableUntilTimestamp")
        if not isinstance(name, str) or not name.strip():
            return Refusal(400, "tokenName must not be empty")
        if not isinstance(endpoints, list) or not all(isinstance(e, str) and e.startswith("/") for e in endpoints):
            return Refusal(400, "apiEndpoints must be a list of paths starting with /")
        if chain.token_type == CUSTOM and not endpoints:
            return Refusal(400, "A token of the Custom scope needs its apiEndpoints")
        if until is not None and (chain.token_type not in RENEWABLE_TYPES or isinstance(until, bool)
                                  or not isinstance(until, (int, float)) or (until != 0 and until <= self.clock())):
            return Refusal(400, "renewableUntilTimestamp must be a future time (or 0) on a renewable token")
        chain.name = name
        chain.api_endpoints = endpoints if chain.token_type == CUSTOM else []
        if until is not None:
            chain.renewable_until = None if until == 0 else float(until)
        return None

    def delete(self, chain: TokenChain) -> None:
        chain.dead = True
        del self.chains[chain.id]

    def renew(self, request: Any) -> TokenChain | Refusal:
        """A new access/refresh pair for the current one; reusing an old pair kills the chain."""
        if not isinstance(request, dict) or not all(isinstance(request.get(key), str) for key in ("accessToken", "refreshToken")):
            return Refusal(400, "accessToken and refreshToken are required")
        access, refresh = request["accessToken"], request["refreshToken"]
        chain = next((c for c in self.chains.values() if access == c.access or access in c.retired), None)
        if chain is None:
            return Refusal(401, "Invalid access token")
        if chain.dead:
            return Refusal(401, "This access token was revoked")
        if chain.refresh is None:
            return Refusal(400, "Tokens of this scope cannot be renewed")
        if access in chain.retired or refresh in chain.retired:
            chain.dead = True  # an old pair came back: someone else holds it
            return Refusal(401, "This token pair was already renewed; every token of the chain is revoked")
        if refresh != chain.refresh:
            return Refusal(401, "Invalid refresh token")
        now = self.clock()
        if chain.refresh_expires is not None and now >= chain.refresh_expires:
            return Refusal(401, "The refresh token has expired")
        if chain.renewable_until is not None and now >= chain.renewable_until:
            return Refusal(401, "The token can no longer be renewed")
        chain.retired |= {chain.access, chain.refresh}
        self._new_pair(chain, now)
        return chain

    def _new_pair(self, chain: TokenChain, now: float) -> None:
        chain.access, chain.refresh = secrets.token_urlsafe(48), secrets.token_urlsafe(48)
        chain.access_expires = now + self.access_lifetime
        grace = chain.access_expires + RENEW_GRACE
        chain.refresh_expires = grace if chain.renewable_until is None else min(grace, chain.renewable_until)

    def _take_id(self) -> int:
        taken, self._next_id = self._next_id, self._next_id + 1
        return taken
