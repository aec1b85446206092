"""The token service's endpoints run against every store backend, as the issuer's domain tests do."""

from tests.issuer.conftest import backend

__all__ = ["backend"]
