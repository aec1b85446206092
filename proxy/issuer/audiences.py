"""Which upstream a token is for: the upstreams whose token source is ``issuer``, by name or audience.

A token request names its upstream with the form parameter ``audience`` (the
upstream's name or one of its configured audiences, RFC 8707's ``resource``
idea with a plain name); with exactly one ``issuer`` upstream it may leave it
out.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from proxy.tokens.issuer_source import IssuerSourceSettings

if TYPE_CHECKING:
    from proxy.config import Config, Upstream


class NoSuchAudience(LookupError):
    """The named audience is not an issuer upstream's, or none was named where several exist."""


def issuer_upstreams(config: Config) -> list[tuple[Upstream, IssuerSourceSettings]]:
    return [(u, u.token_source) for u in config.upstreams if isinstance(u.token_source, IssuerSourceSettings)]


def select_upstream(config: Config, audience: str | None) -> tuple[Upstream, IssuerSourceSettings]:
    """The issuer upstream ``audience`` names (its name, or one of its audiences); NoSuchAudience otherwise."""
    candidates = issuer_upstreams(config)
    if audience is None:
        if len(candidates) == 1:
            return candidates[0]
        raise NoSuchAudience("name the upstream with the audience parameter" if candidates else "labgate issues tokens for no upstream")
    for upstream, source in candidates:
        if audience == upstream.name:
            return upstream, source
    named = [(u, s) for u, s in candidates if audience in s.audience]
    if len(named) == 1:
        return named[0]
    raise NoSuchAudience("the audience names no upstream labgate issues tokens for" if not named else "the audience names several upstreams: use the upstream's name")
