"""``POST /oauth/token``: labgate's own OAuth 2.0 token endpoint (RFC 6749).

Grants (which token type each yields is the upstream's ``grants``,
:mod:`proxy.issuer.grants`):

* ``password`` (section 4.3): a subject and its password;
* ``client_credentials`` (section 4.4): an API client and its secret; the
  token is for the client's subject; never a refresh token;
* ``emergency``: an emergency account of the config (SimpliVity's local
  ``svtcli``): wrong credentials answer ``invalid_grant`` / "Invalid credentials";
* ``refresh_token`` (section 6): renews a chain (:mod:`proxy.issuer.chains`).

The upstream is the form's ``audience`` (its name, or one of its audiences)
and/or RFC 8707 ``resource`` (:mod:`proxy.gateway.token_service.audiences`), or the only
upstream whose source is ``issuer``.  Errors follow section 5.2:
400 with ``invalid_request``, ``invalid_grant``, ``unauthorized_client``,
``unsupported_grant_type``, ``invalid_scope`` (or RFC 8707's
``invalid_target``); 401 ``invalid_client`` with a Basic challenge.  Every
answer carries ``Cache-Control: no-store`` and ``Pragma: no-cache`` (section
5.1).  No password, secret or token is ever logged or echoed; an unknown
name costs as much time as a wrong password, and says the same.
"""

from __future__ import annotations

import hmac
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web

from proxy.gateway.errors import error_response
from proxy.gateway.token_service.audiences import (
    NoSuchAudience,
    TargetsDiffer,
    select_upstream,
)
from proxy.gateway.token_service.renewal import (
    ChainRenewal,
    Client,
    RenewalRequest,
    Target,
    TokenRefused,
    read_token_request,
)
from proxy.gateway.token_service.token_request import (
    ClientAuthenticationFailed,
    ClientCredentials,
    TokenForm,
    read_token_endpoint_request,
)
from proxy.issuer import chains, directory
from proxy.issuer.access_tokens import AccessTokenGrant, mint_access_token
from proxy.issuer.grants import token_terms
from proxy.issuer.keys import SigningKeyUnusable
from proxy.issuer.records import NAME, RefreshRecord
from proxy.issuer.secrets_hash import verify_secret_async
from proxy.reasons import Reason
from proxy.store.base import StoreUnavailable
from proxy.tokens.issuer_source import IssuerSourceSettings
from proxy.tokens.observe import BadTokenRequest
from proxy.verification_keys import KeysUnavailable

if TYPE_CHECKING:
    from proxy.config import Config, Upstream
    from proxy.issuer.ring import KeyRing
    from proxy.store.base import Store
    from proxy.tokens.state import TokenStateGuard

logger = logging.getLogger("labgate")

PUBLIC_CLIENT_ID = "public"  # the client_id claim of a token whose client did not name itself
INVALID_CREDENTIALS = "Invalid credentials"  # SimpliVity's words, for every wrong name or password
TOKEN_REALM = "labgate"
# RFC 6749 appendix A.1: client-id = *VSCHAR (%x20-7E); bounded, since it goes into tokens.
PUBLIC_CLIENT_ID_SYNTAX = re.compile(r"[\x20-\x7e]{1,255}")
# What RFC 6749 section 5.2 allows in error_description (no '"', no '\\'), bounded: room for any grant URN.
GRANT_TYPE_ECHO = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]{1,128}")


@dataclass(frozen=True)
class TokenOutcome:
    """What the gateway records about a token request (metrics, decision log): never a secret."""

    reason: Reason
    detail: str = ""
    upstream: str | None = None
    token_type: str | None = None


class TokenEndpoint:
    """One config version's token endpoint."""

    def __init__(
        self, config: Config, store: Store, key_ring: KeyRing, token_state: TokenStateGuard,
        *, clock: Callable[[], float] = time.time,
    ) -> None:
        assert config.issuer is not None
        self.config = config
        self.issuer = config.issuer
        self.store = store
        self.key_ring = key_ring
        self.token_state = token_state
        self.clock = clock
        self.renewal = ChainRenewal(config, store, key_ring, token_state)
        self._grants: dict[str, Callable[[TokenForm, float], Awaitable[tuple[dict[str, object], TokenOutcome]]]] = {
            "password": self._password,
            "client_credentials": self._client_credentials,
            "emergency": self._emergency,
            "refresh_token": self._refresh,
        }

    async def handle(self, request: web.BaseRequest, request_id: str) -> tuple[web.Response, TokenOutcome]:
        try:
            body, outcome = await self._answer(request)
        except TokenRefused as exc:
            return self._refusal(exc, request_id), TokenOutcome(exc.reason, exc.detail)
        except (StoreUnavailable, KeysUnavailable, SigningKeyUnusable) as exc:
            logger.warning("token endpoint: %s", exc)
            reason = Reason.STORE_UNAVAILABLE if isinstance(exc, StoreUnavailable) else Reason.KEYS_UNAVAILABLE
            refused = TokenRefused(reason, "tokens cannot be issued right now")
            return self._refusal(refused, request_id), TokenOutcome(reason, refused.detail)
        headers = {"Cache-Control": "no-store", "Pragma": "no-cache", "X-Request-ID": request_id}
        return web.json_response(body, headers=headers), outcome

    def _refusal(self, refused: TokenRefused, request_id: str) -> web.Response:
        response = error_response(refused.reason, refused.detail, request_id)
        response.headers["Pragma"] = "no-cache"
        if refused.reason.status == 401:
            response.headers["WWW-Authenticate"] = f'Basic realm="{TOKEN_REALM}", charset="UTF-8"'
        if refused.reason is Reason.METHOD_NOT_SUPPORTED:
            response.headers["Allow"] = "POST"
        if refused.reason is Reason.BODY_TOO_LARGE:
            response.force_close()
        return response

    async def _answer(self, request: web.BaseRequest) -> tuple[dict[str, object], TokenOutcome]:
        if request.method != "POST":
            raise TokenRefused(Reason.METHOD_NOT_SUPPORTED, "the token endpoint takes POST (RFC 6749 section 3.2)")
        body = await read_token_request(
            request, self.config.limits.body_timeout, what="token request", too_large="a token request is a small form"
        )
        try:
            form = read_token_endpoint_request(body, request.headers.get("Content-Type", ""), request.headers.getall("Authorization", []))
        except BadTokenRequest as exc:
            raise TokenRefused(Reason.BAD_TOKEN_REQUEST, str(exc)) from None
        except ClientAuthenticationFailed as exc:
            raise TokenRefused(Reason.CLIENT_AUTHENTICATION_FAILED, exc.detail, basic=exc.basic) from None
        grant = self._grants.get(form.grant_type)
        if grant is None:
            raise TokenRefused(Reason.UNSUPPORTED_GRANT_TYPE, _unsupported(form.grant_type))
        return await grant(form, self.clock())

    # -- the grants ----------------------------------------------------------------

    async def _password(self, form: TokenForm, now: float) -> tuple[dict[str, object], TokenOutcome]:
        username, password = _credentials(form)
        client = await self._client(form.client, now)
        target, token_type = self._target_for(form, "password", client)
        subject = await directory.get_subject(self.store, username, now=now) if NAME.fullmatch(username) else None
        if not await verify_secret_async(password, subject.password_hash if subject else None):
            raise TokenRefused(Reason.INVALID_GRANT, INVALID_CREDENTIALS)
        return await self._issue(form, target, token_type, username, client, "subject", now)

    async def _emergency(self, form: TokenForm, now: float) -> tuple[dict[str, object], TokenOutcome]:
        username, password = _credentials(form)
        client = await self._client(form.client, now)
        target, token_type = self._target_for(form, "emergency", client)
        account = next(
            (a for a in self.issuer.emergency_accounts if hmac.compare_digest(a.username.encode(), username.encode())), None
        )
        if not await verify_secret_async(password, account.password_hash if account else None):
            raise TokenRefused(Reason.INVALID_GRANT, INVALID_CREDENTIALS)
        return await self._issue(form, target, token_type, username, client, "emergency", now)

    async def _client_credentials(self, form: TokenForm, now: float) -> tuple[dict[str, object], TokenOutcome]:
        if not form.client.confidential:
            raise TokenRefused(
                Reason.CLIENT_AUTHENTICATION_FAILED,
                "client_credentials needs the client's id and secret",
                basic=form.client.method == "basic",
            )
        client = await self._client(form.client, now)
        target, token_type = self._target_for(form, "client_credentials", client)
        record = await directory.get_client(self.store, client.client_id, now=now)
        subject = await directory.get_subject(self.store, record.subject, now=now) if record else None
        if record is None or subject is None:
            raise TokenRefused(
                Reason.CLIENT_AUTHENTICATION_FAILED, "the client is unknown or its secret is wrong", basic=form.client.method == "basic"
            )
        return await self._issue(form, target, token_type, subject.name, client, "subject", now, refreshable=False)

    async def _refresh(self, form: TokenForm, now: float) -> tuple[dict[str, object], TokenOutcome]:
        presented = form.get("refresh_token")
        if presented is None:
            raise TokenRefused(Reason.BAD_TOKEN_REQUEST, "the refresh_token grant needs refresh_token")
        client = await self._client(form.client, now)
        named = None if form.get("audience") is None and not form.resources else (lambda: self._named_upstream(form)[0])
        request = RenewalRequest(client, form.client.method == "basic", named, lambda allowed: _scope(form, allowed))
        renewed = await self.renewal.renew(presented, request, now)
        return _answer(renewed.issued, renewed.grant), TokenOutcome(
            Reason.ALLOWED, "", renewed.target.upstream.name, renewed.record.token_type
        )

    # -- parts ---------------------------------------------------------------------

    async def _client(self, credentials: ClientCredentials, now: float) -> Client:
        """Who the client is; a confidential one proves it with its secret (or gets ``invalid_client``)."""
        basic = credentials.method == "basic"
        if credentials.client_id is None:
            return Client(PUBLIC_CLIENT_ID, confidential=False, named=False)
        if not NAME.fullmatch(credentials.client_id):
            # No registered client has this id (theirs are NAMEs); a public client may use any RFC 6749 client-id.
            if credentials.secret is None and PUBLIC_CLIENT_ID_SYNTAX.fullmatch(credentials.client_id):
                return Client(credentials.client_id, confidential=False, named=True)
            raise TokenRefused(Reason.CLIENT_AUTHENTICATION_FAILED, "the client id is not one labgate knows", basic=basic)
        record = await directory.get_client(self.store, credentials.client_id, now=now)
        if credentials.secret is None:
            if record is not None:
                raise TokenRefused(Reason.CLIENT_AUTHENTICATION_FAILED, "this client must authenticate with its secret", basic=basic)
            return Client(credentials.client_id, confidential=False, named=True)
        if not await verify_secret_async(credentials.secret, record.secret_hash if record else None) or record is None:
            raise TokenRefused(Reason.CLIENT_AUTHENTICATION_FAILED, "the client is unknown or its secret is wrong", basic=basic)
        return Client(record.client_id, confidential=True, named=True, audience=record.audience)

    def _target_for(self, form: TokenForm, grant_type: str, client: Client) -> tuple[Target, str]:
        """The upstream, the token type its ``grants`` give this grant, and the client's right to it."""
        upstream, source = self._named_upstream(form)
        if client.audience is not None and client.audience != upstream.name and client.audience not in source.audience:
            raise TokenRefused(Reason.CLIENT_NOT_AUTHORIZED, "this client may not get tokens for this audience")
        token_type = source.token_type_for(grant_type)
        if token_type is None:
            raise TokenRefused(Reason.GRANT_NOT_ALLOWED, f"upstream {upstream.name!r} does not serve the {grant_type} grant")
        return Target(upstream, source, self.config.packs[upstream.pack].token_types[token_type].spec.lifetimes), token_type

    def _named_upstream(self, form: TokenForm) -> tuple[Upstream, IssuerSourceSettings]:
        """The upstream ``audience`` and ``resource`` name (RFC 8707 ``invalid_target`` when they cannot)."""
        try:
            return select_upstream(self.config, form.get("audience"), form.resources)
        except TargetsDiffer as exc:
            raise TokenRefused(Reason.TARGETS_DIFFER, str(exc)) from None
        except NoSuchAudience as exc:
            named = form.get("audience") is not None or bool(form.resources)
            raise TokenRefused(Reason.UNKNOWN_AUDIENCE if named else Reason.BAD_TOKEN_REQUEST, str(exc)) from None

    async def _issue(
        self, form: TokenForm, target: Target, token_type: str, subject: str, client: Client, principal: str,
        now: float, *, refreshable: bool = True,
    ) -> tuple[dict[str, object], TokenOutcome]:
        terms = token_terms(target.upstream_type_lifetimes, self.issuer)
        scope = _scope(form, (token_type,))
        audience = target.source.audience[0]
        grant = AccessTokenGrant(subject, client.client_id, token_type, audience, terms.lifetime, scope)
        key = await self.key_ring.signing_key()
        if refreshable and terms.refresh_until is not None:
            chain = RefreshRecord(
                chains.new_chain_id(), subject, client.client_id, token_type, audience, target.upstream.name, scope,
                None, None, now, now + terms.refresh_until, client.confidential, principal,
            )
            issued = await chains.issue_in_chain(self.store, key, self.issuer, grant, chain, now=now)
        else:
            issued = chains.IssuedTokens(mint_access_token(key, self.issuer, grant, now=now))
        return _answer(issued, grant), TokenOutcome(Reason.ALLOWED, "", target.upstream.name, token_type)


def _unsupported(grant_type: str) -> str:
    """Names the grant in full when it is a short value RFC 6749 section 5.2 lets error_description carry."""
    if GRANT_TYPE_ECHO.fullmatch(grant_type):
        return f"grant_type '{grant_type}' is not supported"
    return "the grant_type is not supported"


def _credentials(form: TokenForm) -> tuple[str, str]:
    username, password = form.get("username"), form.get("password")
    if username is None or password is None:
        raise TokenRefused(Reason.BAD_TOKEN_REQUEST, f"the {form.grant_type} grant needs username and password")
    return username, password


def _scope(form: TokenForm, allowed: tuple[str, ...]) -> tuple[str, ...]:
    """The requested scope, when it asks for no more than ``allowed`` (RFC 6749 section 3.3); all of it otherwise."""
    requested = form.get("scope")
    if requested is None:
        return allowed
    words = tuple(dict.fromkeys(requested.split(" ")))
    if any(not w for w in words) or not set(words) <= set(allowed):
        raise TokenRefused(Reason.SCOPE_NOT_ALLOWED, f"the scope may name only: {' '.join(allowed)}")
    return words


def _answer(issued: chains.IssuedTokens, grant: AccessTokenGrant) -> dict[str, object]:
    """RFC 6749 section 5.1."""
    body: dict[str, object] = {
        "access_token": issued.access.token,
        "token_type": "Bearer",
        "expires_in": issued.access.expires_at - issued.access.issued_at,
        "scope": " ".join(grant.scope),
    }
    if issued.refresh_token is not None:
        body["refresh_token"] = issued.refresh_token
    return body
