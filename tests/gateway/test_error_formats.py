"""Error bodies: labgate's own, or the vendor's where a pack's appliance client reads its own shape."""

from __future__ import annotations

import json

from proxy.gateway.errors import ERROR_BODIES, error_response
from proxy.policy.model import ERROR_FORMATS
from proxy.reasons import Reason


def test_every_format_a_pack_may_name_has_a_renderer() -> None:
    assert tuple(ERROR_BODIES) == ERROR_FORMATS


def test_labgate_is_the_default_shape() -> None:
    response = error_response(Reason.PREFIX_NOT_ALLOWED, "outside the prefixes", "rid")
    assert response.body is not None and isinstance(response.body, bytes)
    assert json.loads(response.body) == {
        "error": "insufficient_scope", "error_description": "outside the prefixes", "reason": "prefix_not_allowed", "request_id": "rid",
    }


def test_commvaults_shape_carries_the_status_and_the_description_with_labgates_reason() -> None:
    """Commvault answers errors as {"errorCode", "errorMessage"}: what its SDK reads and quotes."""
    response = error_response(Reason.REVOKED, "the token was revoked", "rid", "commvault")
    assert response.status == 401 and response.body is not None and isinstance(response.body, bytes)
    assert json.loads(response.body) == {
        "errorCode": 401, "errorMessage": "the token was revoked", "reason": "revoked", "request_id": "rid",
    }
    assert response.headers["WWW-Authenticate"].startswith("Bearer ")  # RFC 6750 section 3 holds in every shape
