"""The issuer's published documents, as labgate's own endpoints answer them.

``/.well-known/jwks.json`` (RFC 7517) and ``/.well-known/oauth-authorization-server``
(RFC 8414), answered only when the config has an ``issuer`` section.  A key
ring that could never be read answers 503 ``keys_unavailable``: an empty key
set would tell clients that no labgate token is valid.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.gateway.errors import error_response
from proxy.issuer.discovery import jwks_document, metadata_document
from proxy.issuer.ring import KeyRing
from proxy.issuer.settings import JWKS_PATH, METADATA_PATH
from proxy.reasons import Reason
from proxy.verification_keys import KeysUnavailable

Handler = Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]
# Relying parties refetch on an unknown kid; a minute bounds how long a dropped key is trusted elsewhere.
JWKS_MAX_AGE = 60
METADATA_MAX_AGE = 300


def discovery_endpoints(ring: KeyRing, request_id: Callable[[web.BaseRequest], str]) -> dict[str, Handler]:
    """Path -> handler, for the gateway's own endpoints."""

    async def jwks(request: web.BaseRequest) -> web.StreamResponse:
        try:
            keys = await ring.published()
        except KeysUnavailable:
            return error_response(Reason.KEYS_UNAVAILABLE, "the signing keys cannot be read right now", request_id(request))
        return web.json_response(jwks_document(keys), headers={"Cache-Control": f"public, max-age={JWKS_MAX_AGE}"})

    async def metadata(request: web.BaseRequest) -> web.StreamResponse:
        return web.json_response(
            metadata_document(ring.settings), headers={"Cache-Control": f"public, max-age={METADATA_MAX_AGE}"}
        )

    return {JWKS_PATH: jwks, METADATA_PATH: metadata}
