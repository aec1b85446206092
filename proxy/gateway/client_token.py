"""The client's token: where it may be presented, and how it is re-emitted upstream.

An upstream's ``token_header`` says where its clients put their token:

* ``bearer`` (default): ``Authorization: Bearer <token>`` (RFC 6750 section 2.1);
* ``authtoken``: Commvault's own ``Authtoken`` header, bare, ``Bearer`` or
  ``QSDK`` prefixed (what Commvault's Python SDK sends), or ``Authorization: Bearer``;
* ``opstoken``: VCF Operations' ``Authorization: OpsToken <token>`` (or its older
  ``vRealizeOpsToken``), or ``Authorization: Bearer``.

Exactly one credential per request: two headers of one name, or two headers
naming different tokens, are refused (an appliance might read the other one).
The client's header is never copied through as sent; where the appliance
issued the token and must see it, :func:`reemitted` writes it again in the
appliance's own header.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from multidict import CIMultiDictProxy

from proxy.reasons import Reason
from proxy.token_facts import token_fingerprint

# RFC 6750 section 2.1 b64token.
_B64TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
MAX_TOKEN_LENGTH = 16384

# Per style: the schemes each header accepts, lower-cased -> canonical spelling ("" = bare token).
_SCHEMES: dict[str, dict[str, dict[str, str]]] = {
    "bearer": {"authorization": {"bearer": "Bearer"}},
    "authtoken": {
        "authorization": {"bearer": "Bearer"},
        "authtoken": {"": "", "bearer": "Bearer", "qsdk": "QSDK"},
    },
    "opstoken": {
        "authorization": {"bearer": "Bearer", "opstoken": "OpsToken", "vrealizeopstoken": "vRealizeOpsToken"},
    },
}
_HEADER_NAMES = {"authorization": "Authorization", "authtoken": "Authtoken"}
_BEARER_ONLY = _SCHEMES["bearer"]["authorization"]


@dataclass(frozen=True)
class ClientToken:
    """The token a client presented, and the scheme it named (``""`` for a bare ``Authtoken``).

    ``fingerprint`` is the token's full sha256 (:func:`proxy.token_facts.token_fingerprint`),
    taken once here: the token source's cache, the token state and the live-token count all key by it.
    """

    token: str
    scheme: str
    fingerprint: str = field(init=False, repr=False, compare=False)
    # The token re-emitted to an appliance that issued it: (as an Authorization header, as an Authtoken header).
    # Written once here, since a client's repeated header is answered with this same object.
    reemitted_as: tuple[tuple[str, str], tuple[str, str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "fingerprint", token_fingerprint(self.token))
        authtoken = f"{self.scheme} {self.token}" if self.scheme else self.token
        object.__setattr__(
            self, "reemitted_as", (("Authorization", f"{self.scheme or 'Bearer'} {self.token}"), ("Authtoken", authtoken))
        )


# Authorization values read lately, each with the token it presents: clients repeat their header,
# and the answer is pure in it.  Bounded: emptied when full.
_RECENT_VALUES = 256
_recent_bearer: dict[str, ClientToken] = {}


@dataclass(frozen=True)
class TokenProblem:
    reason: Reason
    detail: str


def expected_form(style: str) -> str:
    """How to present a token to an upstream of ``style``, for error messages."""
    return {
        "bearer": "an Authorization: Bearer header",
        "authtoken": "an Authtoken header (or Authorization: Bearer)",
        "opstoken": "an Authorization: OpsToken (or Bearer) header",
    }[style]


def client_token(headers: CIMultiDictProxy[str], style: str = "bearer") -> ClientToken | TokenProblem:
    """The one token the request carries in the places ``style`` reads, or why there is none.

    A ``bearer`` header read before is answered from :data:`_recent_bearer`
    (one dict lookup, nothing parsed or hashed again).
    """
    if style == "bearer":  # one header to read: no second credential to compare with
        values = headers.getall("Authorization", ())
        if len(values) == 1:
            value = values[0]
            known = _recent_bearer.get(value)
            if known is not None:
                return known
            parsed = _parse(value, _BEARER_ONLY, "authorization")
            if isinstance(parsed, ClientToken):
                if len(_recent_bearer) >= _RECENT_VALUES:
                    _recent_bearer.clear()
                _recent_bearer[value] = parsed
                return parsed
            return parsed.problem if isinstance(parsed, _OtherScheme) else parsed
    found: list[ClientToken] = []
    other_scheme: TokenProblem | None = None
    for header, schemes in _SCHEMES[style].items():
        values = headers.getall(_HEADER_NAMES[header], [])
        if len(values) > 1:
            return TokenProblem(Reason.MALFORMED_AUTHORIZATION, f"exactly one {_HEADER_NAMES[header]} header is allowed")
        if values:
            parsed = _parse(values[0], schemes, header)
            if isinstance(parsed, _OtherScheme):
                other_scheme = parsed.problem
            elif isinstance(parsed, TokenProblem):
                return parsed
            else:
                found.append(parsed)
    if not found:
        return other_scheme or TokenProblem(Reason.MISSING_TOKEN, f"{expected_form(style)} is required")
    if other_scheme is not None or len({t.token for t in found}) > 1:
        return TokenProblem(Reason.MALFORMED_AUTHORIZATION, "the request carries two different credentials")
    return found[-1] if style == "authtoken" else found[0]  # the native header's scheme is re-emitted


@dataclass(frozen=True)
class _OtherScheme:
    """A credential of another authentication method (Basic, Negotiate, ...): no token of ours.

    RFC 6750 section 3.1: a request that "attempted using an unsupported
    authentication method" lacks authentication information, so it gets the
    bare challenge (``missing_token``), unless it also carries a token: then it
    carries two credentials, and is refused for that.
    """

    problem: TokenProblem


def _parse(value: str, schemes: dict[str, str], header: str) -> ClientToken | TokenProblem | _OtherScheme:
    first, _, rest = value.strip().partition(" ")
    canonical = schemes.get(first.lower())
    if canonical is not None and rest.strip():
        token = rest.strip()
    elif canonical is not None:
        # A scheme with nothing after it ('QSDK', 'Bearer'): never a bare token of that name.
        return TokenProblem(Reason.MALFORMED_AUTHORIZATION, "the token is empty or malformed")
    elif "" in schemes and not rest:
        canonical, token = "", first  # a bare Authtoken
    else:
        allowed = " or ".join(s for s in schemes.values() if s) or "a bare token"
        return _OtherScheme(TokenProblem(Reason.MISSING_TOKEN, f"the {_HEADER_NAMES[header]} scheme must be {allowed}"))
    if len(token) > MAX_TOKEN_LENGTH or not _B64TOKEN.fullmatch(token):
        return TokenProblem(Reason.MALFORMED_AUTHORIZATION, "the token is empty or malformed")
    return ClientToken(token, canonical)


def reemitted(presented: ClientToken, style: str) -> tuple[str, str]:
    """The appliance's own token, written in the one header the appliance reads."""
    return presented.reemitted_as[style == "authtoken"]
