"""Every error labgate answers with: JSON, a stable reason, never a token.

Body: ``{"error", "error_description", "reason", "request_id"}``.  401 answers
carry ``WWW-Authenticate: Bearer`` with the RFC 6750 section 3.1 error code.
"""

from __future__ import annotations

import json

from aiohttp import web

from proxy.reasons import Reason

REALM = "labgate"


class BodyTooLarge(Exception):
    """The client sent more body than allowed (``limits.max_body_bytes``, or a token request's cap)."""


def error_body(reason: Reason, detail: str, request_id: str) -> dict[str, str]:
    return {
        "error": reason.error,
        "error_description": detail,
        "reason": reason.code,
        "request_id": request_id,
    }


def www_authenticate(reason: Reason, detail: str) -> str:
    """RFC 6750 section 3: quoted-string values must not carry '"' or '\\'."""
    safe = detail.replace("\\", "").replace('"', "'")
    return f'Bearer realm="{REALM}", error="{reason.error}", error_description="{safe}"'


def error_response(reason: Reason, detail: str, request_id: str) -> web.Response:
    headers = {"X-Request-ID": request_id, "Cache-Control": "no-store"}
    if reason.is_auth_failure:
        headers["WWW-Authenticate"] = www_authenticate(reason, detail)
    return web.Response(
        status=reason.status,
        body=json.dumps(error_body(reason, detail, request_id)).encode(),
        content_type="application/json",
        headers=headers,
    )
