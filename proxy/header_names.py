"""Request header names as an appliance may read them, and what each kind may carry.

Many appliance stacks (CGI and WSGI servers, PHP) turn ``X_Real_IP`` and
``X.Real.IP`` into the same variable as ``X-Real-IP``, so a rule about a header
name holds only if it holds for every spelling: names are compared by their
:func:`header_key` (lower case, ``_`` and ``.`` read as ``-``).

Three kinds of client header, by what they could tell an appliance:

* **reserved**: never forwarded whatever a pack or upstream says.  Hop-by-hop
  and framing headers (labgate frames the request itself), method overrides,
  every header that carries a credential (``Authorization``, Commvault's
  ``Authtoken``, ``X-Auth-Token``, any ``*token*``, ``*session*``, API keys,
  ``Proxy-*``) and every header that says who the client is on the network
  (``X-Forwarded-*``, ``Forwarded``, ``Via``, ``*-IP`` such as
  ``CF-Connecting-IP`` or ``True-Client-IP``).  labgate sets the credential and
  the forwarding headers itself.
* **sensitive**: identity assertions and cookies (``Cookie``, ``X-Remote-User``,
  ``*-User``, ``*-Email``, ``*-Groups``, ``*-Roles``, ``*principal*``,
  ``*identity*``, ``*impersonat*``): dropped unless the pack or the upstream
  lists the header in ``headers.allow``.
* **ordinary**: everything else; forwarded in ``standard`` mode, and in
  ``strict`` mode only when listed.
"""

from __future__ import annotations

import functools
import re
from typing import Literal

HeaderKind = Literal["reserved", "sensitive", "ordinary"]

# RFC 9110 section 7.6.1 hop-by-hop headers, and framing labgate always writes itself.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade", "proxy-connection"}
)
FRAMING = frozenset({"host", "content-length", "expect"})
# A client could otherwise turn an allowed POST into a DELETE at the appliance.
METHOD_OVERRIDES = frozenset(
    {"x-http-method-override", "x-http-method", "x-method-override"}
)
# Set by labgate only (request ids are checked and re-sent by labgate).
SET_BY_LABGATE = frozenset({"x-request-id"})

_RESERVED_EXACT = frozenset(
    {
        "authorization", "authtoken", "cookie2", "via", "forwarded", "x-original-url", "x-rewrite-url",
        "x-original-uri", "x-envoy-original-path", "x-api-key", "api-key", "apikey", "x-apikey",
        "x-amz-security-token", "x-csrf-token", "x-xsrf-token",
    }
)
_RESERVED_PREFIXES = ("proxy-", "x-forwarded-", "x-original-", "x-envoy-")
# Substrings of a name that mean a credential or a client address, however prefixed.
_RESERVED_PARTS = re.compile(
    r"auth|token|session|secret|passw|credential|api-?key|signature|client-?ip|real-?ip|connecting-?ip|remote-?addr|"
    r"forwarded-?for"
)
_RESERVED_SUFFIXES = ("-ip", "-ip-address", "-addr")

_SENSITIVE_EXACT = frozenset({"cookie", "from"})
_SENSITIVE_PARTS = re.compile(r"user|e-?mail|group|role|principal|identity|impersonat|subject|tenant|remote")
_NOT_IDENTITY = frozenset({"user-agent"})


@functools.lru_cache(maxsize=4096)  # client-controlled names, so bounded; about ten a request
def header_key(name: str) -> str:
    """The one spelling every rule compares: ``X_Real.IP`` -> ``x-real-ip``."""
    return name.lower().replace("_", "-").replace(".", "-")


@functools.lru_cache(maxsize=2048)  # client-controlled names, so bounded
def header_kind(key: str) -> HeaderKind:
    """What a header (by :func:`header_key`) could carry to an appliance."""
    if (
        key in HOP_BY_HOP
        or key in FRAMING
        or key in METHOD_OVERRIDES
        or key in SET_BY_LABGATE
        or key in _RESERVED_EXACT
        or key.startswith(_RESERVED_PREFIXES)
        or key.endswith(_RESERVED_SUFFIXES)
        or _RESERVED_PARTS.search(key)
    ):
        return "reserved"
    if key in _NOT_IDENTITY:
        return "ordinary"
    if key in _SENSITIVE_EXACT or _SENSITIVE_PARTS.search(key):
        return "sensitive"
    return "ordinary"


def is_method_override(key: str) -> bool:
    return key in METHOD_OVERRIDES or "method-override" in key
