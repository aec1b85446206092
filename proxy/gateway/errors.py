"""Every error labgate answers with: JSON, a stable reason, never a token.

Body: ``{"error", "error_description", "reason", "request_id"}``; on an
upstream whose pack says ``error_format: commvault``, Commvault's own
``{"errorCode", "errorMessage"}`` (the HTTP status and the description, what
Commvault's SDK reads from an error answer) with the same ``reason`` and
``request_id`` beside them.

The ``WWW-Authenticate: Bearer`` challenge follows RFC 6750 section 3: every
401 carries it, and so does every 403 ``insufficient_scope`` ("MUST include
the HTTP WWW-Authenticate response header field" when a request fails the
token's access); a request that sent no credentials at all gets the bare
challenge, without an error code (section 3.1: it "SHOULD NOT include an
error code or other error information").  Other answers carry none: a 400 or
a 503 is not about the token.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping

from aiohttp import web

from proxy.errors import LabgateError
from proxy.reasons import Reason

REALM = "labgate"


class BodyTooLarge(LabgateError):
    """The client sent more body than allowed (``limits.max_body_bytes``, or a token request's cap)."""

    reason = Reason.BODY_TOO_LARGE


def error_body(reason: Reason, detail: str, request_id: str) -> dict[str, str]:
    return {
        "error": reason.error,
        "error_description": detail,
        "reason": reason.code,
        "request_id": request_id,
    }


def commvault_error_body(reason: Reason, detail: str, request_id: str) -> dict[str, object]:
    return {"errorCode": reason.status, "errorMessage": detail, "reason": reason.code, "request_id": request_id}


# One renderer per name of proxy.policy.model.ERROR_FORMATS.
ERROR_BODIES: Mapping[str, Callable[[Reason, str, str], Mapping[str, object]]] = {
    "labgate": error_body,
    "commvault": commvault_error_body,
}


def www_authenticate(reason: Reason, detail: str) -> str | None:
    """The Bearer challenge ``reason`` calls for, or None; quoted-string values never carry '"' or '\\'."""
    if reason is Reason.MISSING_TOKEN:
        return f'Bearer realm="{REALM}"'
    if not reason.challenges_bearer:
        return None
    safe = detail.replace("\\", "").replace('"', "'")
    return f'Bearer realm="{REALM}", error="{reason.error}", error_description="{safe}"'


def error_response(reason: Reason, detail: str, request_id: str, error_format: str = "labgate") -> web.Response:
    headers = {"X-Request-ID": request_id, "Cache-Control": "no-store"}
    challenge = www_authenticate(reason, detail)
    if challenge is not None:
        headers["WWW-Authenticate"] = challenge
    return web.Response(
        status=reason.status,
        body=json.dumps(ERROR_BODIES[error_format](reason, detail, request_id)).encode(),
        content_type="application/json",
        headers=headers,
    )
