"""What every upstream credential does, and the one way it fails.

The gateway asks a credential for the ``Authorization`` value of the next
forwarded request, and tells it when the appliance refused that value (401).
A credential that cannot produce a value raises :class:`CredentialUnavailable`;
its ``detail`` goes into a 503 answer and the log, so it never carries a
secret, a password or a token.
"""

from __future__ import annotations

from typing import Protocol

from proxy.errors import LabgateError
from proxy.reasons import Reason


class CredentialUnavailable(LabgateError):
    """No credential to forward with right now (the login failed, or waits before it is tried again)."""

    reason = Reason.UPSTREAM_CREDENTIAL_UNAVAILABLE


class UpstreamCredential(Protocol):
    # What happens after the appliance refused it, for the client's error message.
    after_rejection: str

    async def authorization(self) -> str:
        """The ``Authorization`` header value to forward with; raises :class:`CredentialUnavailable`."""
        ...

    def rejected(self, authorization: str) -> None:
        """The appliance answered 401 to a request carrying ``authorization``."""
        ...

    async def close(self) -> None: ...
