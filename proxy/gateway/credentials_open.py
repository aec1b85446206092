"""An upstream's configured credential, built; and whether a client's own token may reach it.

The client's bearer token is never forwarded to an upstream whose source is
``issuer``: labgate's tokens are for labgate, and the appliance behind an
``issuer`` upstream only ever sees the credential labgate holds.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable

from yarl import URL

from proxy.config import Upstream
from proxy.credentials.base import UpstreamCredential
from proxy.credentials.oauth import OAuthCredential
from proxy.credentials.settings import OAuthCredentialSettings
from proxy.credentials.static import StaticCredential
from proxy.gateway.transport import client_ssl
from proxy.tokens.issuer_source import IssuerSourceSettings


def forwards_client_authorization(upstream: Upstream) -> bool:
    """Whether the client's ``Authorization`` header goes to the appliance as it came.

    Not when labgate holds a credential for the upstream (it replaces the
    header), nor when the upstream's tokens are labgate's own (``issuer``).
    """
    return upstream.credential is None and not isinstance(upstream.token_source, IssuerSourceSettings)


def open_credential(upstream: Upstream, *, clock: Callable[[], float] | None = None) -> UpstreamCredential | None:
    """The upstream's credential, or None when it has none; ``clock`` for an OAuth login's times (tests)."""
    settings = upstream.credential
    if settings is None:
        return None
    if isinstance(settings, OAuthCredentialSettings):
        tls = token_endpoint_tls(upstream, settings)
        if clock is None:
            return OAuthCredential(settings, upstream=upstream.name, tls=tls)
        return OAuthCredential(settings, upstream=upstream.name, tls=tls, clock=clock)
    return StaticCredential(settings, upstream=upstream.name)


def token_endpoint_tls(upstream: Upstream, settings: OAuthCredentialSettings) -> ssl.SSLContext | bool:
    """On the appliance's own origin, the upstream's ``tls`` (CA, client certificate); elsewhere the credential's."""
    if URL(settings.token_url).origin() == upstream.url.origin():
        return client_ssl(upstream)
    if not settings.tls_verify:
        return False
    if settings.ca_file is not None:
        return ssl.create_default_context(cafile=str(settings.ca_file))
    return True
