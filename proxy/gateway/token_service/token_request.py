"""What a request to labgate's token endpoint says: its parameters and how the client authenticates.

The form is read by :func:`proxy.tokens.observe.read_token_form` (each
parameter exactly once, RFC 6749 section 3.2).  Client authentication (RFC
6749 section 2.3.1) is HTTP Basic or ``client_id``/``client_secret`` in the
body, never both: a request that uses two methods is refused (``MUST NOT use
more than one``).  In Basic, id and secret are form-urlencoded before being
joined by ``:`` (the RFC's own rule, so a ``:`` in a secret survives).

A client without a secret (SimpliVity clients send ``simplivity:``) is a
public client: it names itself, and proves nothing.

RFC 8707's ``resource`` is the one parameter that may repeat ("Multiple
resource parameters MAY be used"): its values are kept apart, in order.
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from proxy.errors import LabgateError
from proxy.reasons import Reason
from proxy.tokens.observe import BadTokenRequest, read_token_form, repeated_values

RESOURCE = "resource"  # RFC 8707 section 2

ClientAuthMethod = Literal["basic", "post", "none"]


class ClientAuthenticationFailed(LabgateError):
    """Unreadable client credentials: RFC 6749 ``invalid_client``; ``basic`` when they came by HTTP Basic."""

    reason = Reason.CLIENT_AUTHENTICATION_FAILED

    def __init__(self, detail: str, *, basic: bool) -> None:
        super().__init__(detail)
        self.basic = basic


@dataclass(frozen=True)
class ClientCredentials:
    """Who the client says it is; ``secret`` None for a public client.  Never logged."""

    method: ClientAuthMethod
    client_id: str | None = None
    secret: str | None = field(default=None, repr=False)

    @property
    def confidential(self) -> bool:
        return bool(self.secret)


@dataclass(frozen=True)
class TokenForm:
    """The parameters (secrets among them: never logged as a whole) and the client's credentials."""

    fields: Mapping[str, str] = field(repr=False)
    client: ClientCredentials
    resources: tuple[str, ...] = ()  # RFC 8707 ``resource`` values (empty ones dropped)

    @property
    def grant_type(self) -> str:
        return self.fields.get("grant_type", "")

    def get(self, name: str) -> str | None:
        """A parameter; an empty one counts as absent (RFC 6749 section 3.2)."""
        return self.fields.get(name) or None


def read_token_endpoint_request(body: bytes, content_type: str, authorizations: list[str]) -> TokenForm:
    """Raises BadTokenRequest (``invalid_request``) or ClientAuthenticationFailed (``invalid_client``)."""
    fields = read_token_form(body, content_type, repeatable=frozenset({RESOURCE}))
    resources = tuple(value for value in repeated_values(body, content_type, RESOURCE) if value)
    if not fields.get("grant_type"):
        raise BadTokenRequest("the token request has no grant_type")
    if len(authorizations) > 1:
        raise BadTokenRequest("send one Authorization header")
    body_id, body_secret = fields.pop("client_id", None), fields.pop("client_secret", None)
    if authorizations:
        if body_secret is not None:
            raise BadTokenRequest("authenticate the client by HTTP Basic or by client_secret in the body, not both")
        client_id, secret = _basic(authorizations[0])
        if body_id is not None and body_id != client_id:
            raise BadTokenRequest("the client id in the body differs from the one in HTTP Basic")
        return TokenForm(fields, ClientCredentials("basic", client_id, secret or None), resources)
    if body_secret is not None and not body_id:
        raise BadTokenRequest("client_secret without client_id")
    if body_id:
        return TokenForm(fields, ClientCredentials("post" if body_secret else "none", body_id, body_secret or None), resources)
    return TokenForm(fields, ClientCredentials("none"), resources)


def _basic(authorization: str) -> tuple[str, str]:
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() != "basic":
        raise BadTokenRequest("the token endpoint authenticates clients by HTTP Basic or in the body, not by a token")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ClientAuthenticationFailed("the HTTP Basic credentials cannot be read", basic=True) from None
    client_id, colon, secret = decoded.partition(":")
    if not colon or not client_id:
        raise ClientAuthenticationFailed("the HTTP Basic credentials need client_id:client_secret", basic=True)
    try:
        return (
            urllib.parse.unquote_plus(client_id, errors="strict"),
            urllib.parse.unquote_plus(secret, errors="strict"),
        )
    except UnicodeDecodeError:
        raise ClientAuthenticationFailed("the HTTP Basic credentials are not form-urlencoded UTF-8", basic=True) from None
