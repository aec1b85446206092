"""What the management API's token-issuing resources share: the upstream a token is for, and the signing key.

Emergency clients and service-account tokens are minted by the management
API itself, for one upstream whose token source is ``issuer`` and offers
them (``emergency_clients``, ``service_accounts``).  A create request names
that upstream in its ``upstream`` field, or leaves it out when exactly one
upstream offers the resource.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from proxy.gateway.token_service.admin.router import AdminContext, AdminError
from proxy.gateway.token_service.audiences import issuer_upstreams
from proxy.issuer.access_tokens import AccessTokenGrant, MintedToken, mint_access_token
from proxy.issuer.keys import SigningKeyUnusable
from proxy.issuer.ring import SigningKey
from proxy.reasons import Reason
from proxy.tokens.issuer_source import IssuerSourceSettings
from proxy.verification_keys import KeysUnavailable

if TYPE_CHECKING:
    from proxy.config import Upstream

logger = logging.getLogger("labgate")


def offering_upstream(
    context: AdminContext, name: Any, offers: Callable[[IssuerSourceSettings], bool], what: str
) -> tuple[Upstream, IssuerSourceSettings]:
    """The upstream ``name`` names, or the only one offering ``what``; AdminError 400 otherwise."""
    offering = [(u, s) for u, s in issuer_upstreams(context.config) if offers(s)]
    names = ", ".join(u.name for u, _ in offering) or "none"
    if name is None:
        if len(offering) == 1:
            return offering[0]
        detail = f"name the upstream in 'upstream' (offering {what}: {names})" if offering else f"no upstream offers {what}"
        raise AdminError(Reason.BAD_ADMIN_REQUEST, detail)
    found = next(((u, s) for u, s in offering if u.name == name), None)
    if found is None:
        raise AdminError(Reason.BAD_ADMIN_REQUEST, f"upstream must name an upstream offering {what} ({names})")
    return found


def configured_upstream(
    context: AdminContext, name: str, offers: Callable[[IssuerSourceSettings], bool], what: str
) -> tuple[Upstream, IssuerSourceSettings]:
    """The upstream a stored record is for, if the config still offers ``what`` there; AdminError 400 otherwise."""
    found = next(((u, s) for u, s in issuer_upstreams(context.config) if u.name == name and offers(s)), None)
    if found is None:
        raise AdminError(Reason.BAD_ADMIN_REQUEST, f"upstream {name!r} no longer offers {what}: delete it instead")
    return found


async def signing_key(context: AdminContext) -> SigningKey:
    """The active signing key; 503 ``keys_unavailable`` when there is none to sign with."""
    try:
        return await context.key_ring.signing_key()
    except (KeysUnavailable, SigningKeyUnusable) as exc:
        logger.warning("management API: %s", exc)
        raise AdminError(Reason.KEYS_UNAVAILABLE, "tokens cannot be issued right now") from None


def mint(key: SigningKey, context: AdminContext, grant: AccessTokenGrant, now: float) -> MintedToken:
    """Sign ``grant``; what labgate would refuse to sign is a bad request, said without a secret."""
    assert context.config.issuer is not None  # the management API exists only with an issuer section
    try:
        return mint_access_token(key, context.config.issuer, grant, now=now)
    except ValueError as exc:
        raise AdminError(Reason.BAD_ADMIN_REQUEST, str(exc)) from None
