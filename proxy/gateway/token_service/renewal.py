"""Renewing a refresh chain: the one path every renewal of labgate's tokens takes.

Two calls renew a chain (:mod:`proxy.issuer.chains`): the OAuth 2.0
``refresh_token`` grant at ``/oauth/token`` (RFC 6749 section 6), and
Commvault's own ``POST /V4/AccessToken/Renew`` for a service-account token
(:mod:`proxy.gateway.token_service.service_token_renew`).  Both must hold the
chain to the same rules, so both come here: the refresh token is known and
unspent, the chain's client, subject and upstream still stand, it has not
reached its renew-until time, and whoever presents a spent refresh token
revokes the whole chain (RFC 9700 section 4.14.2).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, NoReturn

import aiohttp
from aiohttp import web

from proxy.errors import LabgateError
from proxy.gateway.errors import BodyTooLarge
from proxy.gateway.token_service.audiences import issuer_upstreams
from proxy.gateway.token_service.small_body import read_small_body
from proxy.issuer import chains, directory
from proxy.issuer.access_tokens import AccessTokenGrant
from proxy.issuer.grants import token_terms
from proxy.issuer.records import RefreshRecord
from proxy.policy.model import Lifetimes
from proxy.reasons import Reason
from proxy.tokens.issuer_source import IssuerSourceSettings
from proxy.tokens.observe import MAX_TOKEN_REQUEST_BYTES

if TYPE_CHECKING:
    from proxy.config import Config, Upstream
    from proxy.issuer.ring import KeyRing
    from proxy.store.base import Store
    from proxy.tokens.state import TokenStateGuard

logger = logging.getLogger("labgate")


class TokenRefused(LabgateError):
    """A token request refused; ``detail`` is safe to show (never a secret); ``basic``: challenge with Basic."""

    def __init__(self, reason: Reason, detail: str, *, basic: bool = False) -> None:
        super().__init__(detail, reason)
        self.basic = basic


async def read_token_request(request: web.BaseRequest, timeout: float, *, what: str, too_large: str) -> bytes:
    """A token or renew request's small body, whole; ``what`` names it ("token request"), ``too_large`` says what it should be."""
    try:
        return await read_small_body(request, MAX_TOKEN_REQUEST_BYTES, timeout)
    except BodyTooLarge:
        raise TokenRefused(Reason.BODY_TOO_LARGE, too_large) from None
    except (TimeoutError, aiohttp.ClientPayloadError, OSError):
        raise TokenRefused(Reason.BAD_TOKEN_REQUEST, f"the {what} body could not be read") from None


@dataclass(frozen=True)
class Client:
    """The client a token is issued to; ``confidential`` when it proved itself with its secret."""

    client_id: str
    confidential: bool
    named: bool  # the request named it (else the token says the public client id)
    audience: str | None = None  # an API client limited to one upstream


@dataclass(frozen=True)
class Target:
    """The upstream a token is for, its source, and the lifetimes of the token type it gets."""

    upstream: Upstream
    source: IssuerSourceSettings
    upstream_type_lifetimes: Lifetimes


@dataclass(frozen=True)
class Renewed:
    """A renewal's new tokens, the grant they carry, and the chain record they were renewed from."""

    issued: chains.IssuedTokens
    grant: AccessTokenGrant
    target: Target
    record: RefreshRecord


@dataclass(frozen=True)
class RenewalRequest:
    """What a renewal call presents besides the refresh token.

    ``named``: the upstream the call names (OAuth's ``audience``/``resource``),
    asked only once the chain itself holds, so a bad chain is told first;
    ``scope``: the scope asked for, given the chain's; ``basic``: the client
    authenticated with HTTP Basic (a refusal challenges it the same way);
    ``access_fingerprint``: Commvault's Renew presents the pair, so the access
    token must be the chain's current one.
    """

    client: Client
    basic: bool = False
    named: Callable[[], Upstream | None] | None = None
    scope: Callable[[tuple[str, ...]], tuple[str, ...]] | None = None
    access_fingerprint: str | None = None


class ChainRenewal:
    """Renews refresh chains for one config version."""

    def __init__(self, config: Config, store: Store, key_ring: KeyRing, token_state: TokenStateGuard) -> None:
        assert config.issuer is not None
        self.config = config
        self.issuer = config.issuer
        self.store = store
        self.key_ring = key_ring
        self.token_state = token_state

    async def renew(self, presented: str, request: RenewalRequest, now: float) -> Renewed:
        """New tokens in the chain of ``presented``; TokenRefused (and the chain revoked on reuse) otherwise."""
        record = await chains.peek(self.store, presented, now=now)
        if record is None:
            await self.refuse_unknown(presented, now)
        target = await self._check_chain(request, record, now)
        if request.access_fingerprint is not None and request.access_fingerprint != record.access_fingerprint:
            raise TokenRefused(Reason.INVALID_GRANT, "the access token is not the one issued with this refresh token")
        scope = request.scope(record.scope) if request.scope is not None else record.scope
        # Marked spent before it is taken: whoever comes second, before or after the take, sees a reuse.
        await chains.mark_spent(self.store, presented, record)
        if await chains.take(self.store, presented, now=now) is None:
            # Another request took it between our read and our take: the same token twice at once.
            await self._revoke_chain(record.chain, record.renew_until, now)
            raise TokenRefused(Reason.REFRESH_TOKEN_REUSED, "the refresh token was used twice: its chain is revoked")
        terms = token_terms(target.upstream_type_lifetimes, self.issuer)
        grant = AccessTokenGrant(
            record.subject, record.client_id, record.token_type, record.audience, terms.lifetime, scope,
            record.path_prefixes, record.client_ips,
        )
        issued = await chains.issue_in_chain(self.store, await self.key_ring.signing_key(), self.issuer, grant, record, now=now)
        return Renewed(issued, grant, target, record)

    async def refuse_unknown(self, presented: str, now: float) -> NoReturn:
        """TokenRefused for a refresh token with no record: used already (then its chain is revoked), or never known."""
        spent = await chains.spent(self.store, presented, now=now)
        if spent is not None:
            await self._revoke_chain(spent.chain, spent.renew_until, now)
            raise TokenRefused(Reason.REFRESH_TOKEN_REUSED, "the refresh token was already used: its chain is revoked")
        raise TokenRefused(Reason.INVALID_GRANT, "the refresh token is unknown or expired")

    async def _revoke_chain(self, chain: str, renew_until: float, now: float) -> None:
        await self.token_state.revoke("chain", chain, now, chains.chain_revocation_until(renew_until, self.issuer))
        logger.warning("refresh token used twice: chain %s revoked with every token minted in it", chain)

    async def _check_chain(self, request: RenewalRequest, record: RefreshRecord, now: float) -> Target:
        """Everything that must still hold for the chain to renew; invalid_grant (or invalid_client) otherwise."""
        client = request.client
        if client.named and client.client_id != record.client_id:
            raise TokenRefused(Reason.INVALID_GRANT, "the refresh token was issued to another client")
        if record.confidential and not client.confidential:
            raise TokenRefused(Reason.CLIENT_AUTHENTICATION_FAILED, "this refresh token's client must authenticate", basic=request.basic)
        if now >= record.renew_until:
            raise TokenRefused(Reason.RENEWAL_ENDED, "the refresh chain has reached its renew-until time: log in again")
        for kind, value in (("chain", record.chain), ("subject", record.subject), ("client", record.client_id)):
            at = await self.store.revoked_at(kind, value, now)  # type: ignore[arg-type]  # uncached: a renewal is rare
            if at is not None and at >= record.chain_created_at:
                raise TokenRefused(Reason.INVALID_GRANT, f"the refresh chain's {kind} was revoked")
        if not await self._principal_exists(record, now):
            raise TokenRefused(Reason.INVALID_GRANT, "the refresh chain's subject no longer exists")
        found = self._chain_upstream(request, record)
        if found is None or record.token_type not in found[1].token_types or record.audience not in found[1].audience:
            raise TokenRefused(Reason.INVALID_GRANT, "the refresh chain's upstream no longer takes its tokens")
        lifetimes = self.config.packs[found[0].pack].token_types[record.token_type].spec.lifetimes
        if lifetimes.refresh_until is None:
            raise TokenRefused(Reason.INVALID_GRANT, "the refresh chain's token type is no longer refreshable")
        return Target(found[0], found[1], lifetimes)

    def _chain_upstream(self, request: RenewalRequest, record: RefreshRecord) -> tuple[Upstream, IssuerSourceSettings] | None:
        """The chain's upstream, if it still takes issuer tokens; a renewal naming another is refused."""
        found = next(((u, s) for u, s in issuer_upstreams(self.config) if u.name == record.upstream), None)
        named = request.named() if found is not None and request.named is not None else None
        if found is not None and named is not None and named.name != found[0].name:
            raise TokenRefused(Reason.UNKNOWN_AUDIENCE, "the refresh token is for another audience")
        return found

    async def _principal_exists(self, record: RefreshRecord, now: float) -> bool:
        if record.principal == "emergency":
            return any(a.username == record.subject for a in self.issuer.emergency_accounts)
        subject = await directory.get_subject(self.store, record.subject, now=now)
        return subject is not None and subject.created_at <= record.chain_created_at
