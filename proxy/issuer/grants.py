"""Which token type each grant yields, and how long its tokens live: the policy side of the token endpoint.

An upstream whose token source is ``issuer`` says which grants it serves:

```yaml
token_source:
  type: issuer
  grants: {password: operator, client_credentials: api-client, emergency: emergency}
```

A grant it does not map is refused (``unsupported_grant_type``).  A
``refresh_token`` grant keeps the type of the chain it renews.  Lifetimes
come from the pack's type: ``lifetimes.ttl`` is the access token's lifetime;
a type without one but with an ``absolute`` lifetime gets that (SimpliVity:
"Tokens expire either after ten minutes of inactivity or after 24 hours even
with continuous activity" -- the idle limit is checked on every request, so
the token itself lives the 24 hours); a type with neither gets
:data:`DEFAULT_ACCESS_TOKEN_LIFETIME`.  Never beyond the type's ``absolute``
nor the issuer's ``access_token_max_lifetime``.  And
``lifetimes.refresh_until`` makes the type refreshable: its refresh chains may
be renewed until that long after they began.  A type without it never gets a
refresh token, and neither does ``client_credentials`` (RFC 6749 section 4.4.3).
"""

from __future__ import annotations

from dataclasses import dataclass

from proxy.issuer.settings import IssuerSettings
from proxy.policy.compile import CompiledPack
from proxy.policy.model import Lifetimes
from proxy.yamlsource import FieldReader, LocatedDict

MAPPED_GRANTS = ("password", "client_credentials", "emergency")
DEFAULT_ACCESS_TOKEN_LIFETIME = 3600.0


def read_grants(
    reader: FieldReader, source: LocatedDict, pack: CompiledPack | None, accepted: tuple[str, ...]
) -> tuple[tuple[str, str], ...]:
    """``grants: {grant: token_type}``; every type must be in the pack and accepted by the source."""
    section = reader.section(source, "grants")
    if section is None:
        return ()
    mapped: list[tuple[str, str]] = []
    for grant in section:
        if grant not in MAPPED_GRANTS:
            reader.error(
                section, grant,
                f"unknown grant {str(grant)[:64]!r} in grants (known: {', '.join(MAPPED_GRANTS)}; refresh_token keeps its chain's type)",
            )
            continue
        token_type = reader.string(section, grant, required=True)
        if token_type is None:
            continue
        if pack is not None and token_type not in pack.token_types:
            known = ", ".join(sorted(pack.token_types))
            reader.error(section, grant, f"unknown token type {token_type!r} in pack {pack.name!r} (known: {known})")
        elif pack is not None and token_type not in accepted:
            reader.error(section, grant, f"token type {token_type!r} is not among this upstream's token_types")
        else:
            mapped.append((grant, token_type))
    return tuple(mapped)


@dataclass(frozen=True)
class TokenTerms:
    """How long a type's access tokens live and, for refreshable types, how long a chain may be renewed."""

    lifetime: float
    refresh_until: float | None


def token_terms(lifetimes: Lifetimes, issuer: IssuerSettings) -> TokenTerms:
    """A token is never minted to outlive what the type or the issuer allows, so expires_in tells the truth."""
    lifetime = next((t for t in (lifetimes.ttl, lifetimes.absolute) if t is not None), DEFAULT_ACCESS_TOKEN_LIFETIME)
    bounds = [lifetime, issuer.access_token_max_lifetime]
    if lifetimes.absolute is not None:
        bounds.append(lifetimes.absolute)
    return TokenTerms(max(1.0, min(bounds)), lifetimes.refresh_until)
