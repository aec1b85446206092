"""What labgate publishes about its tokens: the JWKS and the RFC 8414 metadata.

Both are plain documents built from the key ring and the issuer settings; the
gateway serves them (:mod:`proxy.gateway.discovery`).  The JWKS carries only
public members: each key is rebuilt from its public PEM, never from the
private one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from proxy.issuer.keys import public_jwk
from proxy.issuer.settings import IssuerSettings
from proxy.store.base import SigningKeyRecord

# The grants labgate's token endpoint answers (``emergency`` is SimpliVity's).
GRANT_TYPES = ("password", "client_credentials", "refresh_token", "emergency")
# RFC 6749 section 2.3.1: HTTP Basic, or the client's credentials in the form body;
# "none" (RFC 7591 section 2): a public client, which names itself or no one and
# authenticates with nothing (the password, emergency and refresh_token grants take one).
TOKEN_ENDPOINT_AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")
# RFC 8414 section 2 requires response_types_supported, and section 3.2 forbids an
# empty array ("Claims with zero elements MUST be omitted").  labgate has no
# authorization endpoint, so it issues nothing in answer to any response_type:
# "none" (OAuth 2.0 Multiple Response Type Encoding Practices, section 4, in
# IANA's response-types registry) is the registered value that says exactly that
# ("SHOULD NOT return an OAuth 2.0 Authorization Code, Access Token, Access Token
# Type, or ID Token").  "code" or "token" would promise flows labgate lacks.
RESPONSE_TYPES = ("none",)


def jwks_document(keys: Iterable[SigningKeyRecord]) -> dict[str, Any]:
    """RFC 7517 section 5: the keys that may verify a labgate token now, the active one last."""
    return {"keys": [public_jwk(key) for key in keys]}


def metadata_document(settings: IssuerSettings) -> dict[str, Any]:
    """RFC 8414 section 2 for an issuer with a token endpoint only (no authorization endpoint)."""
    return {
        "issuer": settings.url,
        "token_endpoint": settings.token_endpoint,
        "jwks_uri": settings.jwks_uri,
        "grant_types_supported": list(GRANT_TYPES),
        "token_endpoint_auth_methods_supported": list(TOKEN_ENDPOINT_AUTH_METHODS),
        "response_types_supported": list(RESPONSE_TYPES),
    }
