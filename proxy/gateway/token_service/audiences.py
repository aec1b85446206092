"""Which upstream a token is for: the upstreams whose token source is ``issuer``, by name, audience or resource.

A token request names its upstream with labgate's form parameter
``audience`` (the upstream's name or one of its configured audiences), with
RFC 8707's ``resource`` (an absolute URI naming the upstream, see
:func:`resource_uris`), or both; with exactly one ``issuer`` upstream it may
name none.  Every name given must point at the same upstream: a labgate
token has one audience, so ``audience`` and ``resource`` naming different
upstreams are refused (RFC 8707 section 2: ``invalid_target``).
"""

from __future__ import annotations

import urllib.parse

from proxy.config import Config, Upstream
from proxy.errors import LabgateError
from proxy.reasons import Reason
from proxy.tokens.issuer_source import IssuerSourceSettings

Candidate = tuple[Upstream, IssuerSourceSettings]


class NoSuchAudience(LabgateError, LookupError):
    """The named audience is not an issuer upstream's, or none was named where several exist."""

    reason = Reason.UNKNOWN_AUDIENCE


class TargetsDiffer(NoSuchAudience):
    """``audience`` and ``resource`` (or two ``resource`` values) name different upstreams."""

    reason = Reason.TARGETS_DIFFER


def issuer_upstreams(config: Config) -> list[Candidate]:
    return [(u, u.token_source) for u in config.upstreams if isinstance(u.token_source, IssuerSourceSettings)]


def select_upstream(config: Config, audience: str | None, resources: tuple[str, ...] = ()) -> Candidate:
    """The issuer upstream ``audience`` and ``resources`` name; NoSuchAudience (or TargetsDiffer) otherwise."""
    candidates = issuer_upstreams(config)
    named = [_by_audience(candidates, audience)] if audience is not None else []
    named += [_by_resource(config, candidates, resource) for resource in resources]
    if not named:
        if len(candidates) == 1:
            return candidates[0]
        raise NoSuchAudience("name the upstream with the audience parameter" if candidates else "labgate issues tokens for no upstream")
    if any(upstream.name != named[0][0].name for upstream, _ in named):
        raise TargetsDiffer("audience and resource name different upstreams: a labgate token is for one")
    return named[0]


def _by_audience(candidates: list[Candidate], audience: str) -> Candidate:
    for upstream, source in candidates:
        if audience == upstream.name:
            return upstream, source
    named = [(u, s) for u, s in candidates if audience in s.audience]
    if len(named) == 1:
        return named[0]
    if not named:
        raise NoSuchAudience("the audience names no upstream labgate issues tokens for")
    raise NoSuchAudience("the audience names several upstreams: use the upstream's name")


def resource_uris(config: Config, upstream: Upstream, source: IssuerSourceSettings) -> tuple[str, ...]:
    """The absolute URIs that name ``upstream`` as an RFC 8707 resource.

    Where clients reach it through labgate: the issuer's origin (or, for an
    upstream served by ``host``, that host with the issuer's scheme) followed
    by its ``path_prefix``; and each of its configured audiences that is
    itself an absolute URI.
    """
    assert config.issuer is not None
    origin = config.issuer.url
    if upstream.host is not None:
        origin = f"{urllib.parse.urlsplit(origin).scheme}://{upstream.host}"
    uris = [origin + (upstream.path_prefix or "")]
    uris += [audience for audience in source.audience if _absolute(audience)]
    return tuple(uris)


def _by_resource(config: Config, candidates: list[Candidate], resource: str) -> Candidate:
    """The upstream whose resource URI is ``resource`` or lies above it (whole segments); the longest wins."""
    if not _absolute(resource):
        raise NoSuchAudience("resource must be an absolute URI without a fragment (RFC 8707 section 2)")
    wanted = _normal(resource)
    best: list[tuple[int, Candidate]] = []
    for upstream, source in candidates:
        for uri in resource_uris(config, upstream, source):
            known = _normal(uri)
            if wanted == known or wanted.startswith(known + "/"):
                best.append((len(known), (upstream, source)))
    if not best:
        raise NoSuchAudience("the resource names no upstream labgate issues tokens for")
    longest = max(length for length, _ in best)
    winners = {c[0].name: c for length, c in best if length == longest}
    if len(winners) > 1:
        raise NoSuchAudience("the resource names several upstreams: use a more specific one")
    return next(iter(winners.values()))


def _absolute(uri: str) -> bool:
    """RFC 3986 section 4.3 absolute-URI (a scheme, no fragment), no query, no dot segment: one spelling per target."""
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:
        return False
    segments = parts.path.split("/")
    return (
        bool(parts.scheme) and parts.scheme[0].isalpha() and "#" not in uri and not parts.query
        and "." not in segments and ".." not in segments and uri.isprintable() and " " not in uri
    )


def _normal(uri: str) -> str:
    """Scheme and host compared without case, a trailing slash ignored."""
    parts = urllib.parse.urlsplit(uri)
    return urllib.parse.urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path.rstrip("/"), "", ""))
