"""A credential that never changes while a config version serves: a bearer token or a Basic user.

The header value is built once.  A 401 from the appliance cannot be mended
here (the operator must replace the token or password and reload), so it is
only logged, without the value.
"""

from __future__ import annotations

import base64
import logging

from proxy.credentials.settings import BasicCredentialSettings, BearerCredentialSettings

logger = logging.getLogger("labgate")


class StaticCredential:
    after_rejection = "the operator must replace the upstream's credential in the config"

    def __init__(self, settings: BearerCredentialSettings | BasicCredentialSettings, *, upstream: str) -> None:
        self._upstream = upstream
        if isinstance(settings, BasicCredentialSettings):
            # RFC 7617 section 2.1: user-id ":" password, UTF-8, base64.
            pair = f"{settings.username}:{settings.password}".encode()
            self._kind = "basic"
            self._value = "Basic " + base64.b64encode(pair).decode("ascii")
        else:
            self._kind = "bearer"
            self._value = "Bearer " + settings.token
        self._warned = False

    def __repr__(self) -> str:
        return f"StaticCredential({self._kind}, upstream={self._upstream!r})"

    async def authorization(self) -> str:
        return self._value

    def rejected(self, authorization: str) -> None:
        """Said once per config version: every request gets the same refusal until the operator acts."""
        if self._warned:
            return
        self._warned = True
        logger.warning(
            "upstream %s refused labgate's %s credential (401): replace it and reload", self._upstream, self._kind
        )

    async def close(self) -> None:
        return None
