"""The decision: request facts + token facts + compiled pack -> allowed or why not.

A pure function, no I/O: the gateway, ``labgate explain`` and the policy test
runner all call it the same way.  Checks run in this order (docs/concepts/request-decision.md) and the first
failure decides:

1. no or malformed ``Authorization: Bearer``      -> 401 invalid_request
2. invalid token                                   -> 401 invalid_token
3. client IP outside the allowlist                 -> 403
4. forbidden operation, method+path, prefix        -> 403
5. query parameter not allowed                     -> 403

Deny beats allow, and no matching rule means deny.

Shadow mode (a token type with ``shadow: true``): a denial at steps 3-5 comes
back as an allowed decision flagged ``shadow``, still naming the reason and
rule that would have denied it, so the gateway forwards, logs and counts it.
Steps 1-2 are never shadowed: a bad token is refused whatever its type says.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from proxy.ipaddrs import IPAddress
from proxy.paths import RequestTarget
from proxy.policy.compile import CompiledPack, CompiledTokenType
from proxy.policy.endpoints import entry_opens
from proxy.reasons import Reason
from proxy.token_facts import TokenFacts, TokenRejection


@dataclass(frozen=True)
class RequestFacts:
    """What the policy may know about a request, already parsed and checked."""

    method: str
    target: RequestTarget
    client_ip: IPAddress | None


@dataclass(frozen=True)
class Decision:
    """The outcome, with the reason code and the rule that decided it.

    ``shadow``: allowed only because the token type is in shadow mode;
    ``reason``, ``rule`` and ``detail`` say what would have denied it.
    """

    allowed: bool
    reason: Reason
    rule: str | None = None
    token_type: str | None = None
    detail: str = ""
    shadow: bool = False

    @property
    def status(self) -> int:
        return Reason.ALLOWED.status if self.allowed else self.reason.status

    def as_explanation(self) -> dict[str, object]:
        """The JSON object ``labgate explain`` prints (``shadow`` only for a shadowed denial)."""
        explanation: dict[str, object] = {
            "allowed": self.allowed,
            "status": self.status,
            "reason": self.reason.code,
            "rule": self.rule,
            "token_type": self.token_type,
        }
        if self.shadow:
            explanation["shadow"] = True
        return explanation


def deny(reason: Reason, detail: str, *, rule: str | None = None, token_type: str | None = None) -> Decision:
    return Decision(False, reason, rule, token_type, detail)


def decide(request: RequestFacts, token: TokenFacts | TokenRejection, pack: CompiledPack) -> Decision:
    """Decide one request; see the module docstring for the order of checks."""
    if isinstance(token, TokenRejection):
        return deny(token.reason, token.detail)
    tt = pack.token_types.get(token.token_type)
    if tt is None:
        # A source mapped the token to a type this pack lacks: `labgate check`
        # prevents it, but a missing type must never fall through to allow.
        return deny(Reason.NO_TOKEN_TYPE, f"token type {token.token_type!r} is not in pack {pack.name!r}")
    failure = _check_client_ip(request, token, tt) or _check_deny(request, tt)
    if failure is not None:
        return _enforced(failure, tt)
    # The route or endpoint prefix that allows this method and path, if any.
    rule = tt.routes.match(request.method, request.target.segments).rule or tt.prefixes.match(request.target.segments)
    if rule is None:
        return _enforced(_no_route(request, tt), tt)
    failure = _check_token_prefixes(request, token, tt) or _check_query(request, tt, rule)
    if failure is not None:
        return _enforced(failure, tt)
    return Decision(True, Reason.ALLOWED, rule, tt.spec.name)


def _enforced(denial: Decision, tt: CompiledTokenType) -> Decision:
    """A denial at steps 3-5; forwarded anyway (flagged) when the type is in shadow mode."""
    if not tt.spec.shadow:
        return denial
    return replace(denial, allowed=True, shadow=True)


def _check_client_ip(request: RequestFacts, token: TokenFacts, tt: CompiledTokenType) -> Decision | None:
    """Both the type's allowlist and the token's own must admit the client."""
    for allowlist, part in ((tt.spec.client_ips, "client_ips"), (token.client_ips, "token_client_ips")):
        if allowlist is None:
            continue
        if request.client_ip is None:
            return _deny(tt, Reason.CLIENT_IP_UNKNOWN, part, "the client address could not be determined")
        if request.client_ip not in allowlist:
            return _deny(tt, Reason.CLIENT_IP_NOT_ALLOWED, part, f"client {request.client_ip} is not in the allowlist")
    return None


def _check_deny(request: RequestFacts, tt: CompiledTokenType) -> Decision | None:
    denied = tt.deny.match(request.method, request.target.segments)
    if denied.rule is None or tt.excepted(request.method, request.target.segments):
        return None
    return deny(
        Reason.OPERATION_FORBIDDEN,
        "this token type may never perform this operation",
        rule=denied.rule,
        token_type=tt.spec.name,
    )


def _no_route(request: RequestFacts, tt: CompiledTokenType) -> Decision:
    """Nothing allows the request: say as precisely as possible why."""
    if tt.routes.match(request.method, request.target.segments).path_matched:
        return _deny(tt, Reason.METHOD_NOT_ALLOWED, "routes", f"method {request.method} is not allowed on this path")
    if tt.spec.path_prefixes and not tt.spec.routes:
        return _deny(tt, Reason.PREFIX_NOT_ALLOWED, "path_prefixes", "the path is outside the allowed endpoint prefixes")
    return _deny(tt, Reason.ROUTE_NOT_ALLOWED, "routes", "no route of this token type allows this request")


def _check_token_prefixes(request: RequestFacts, token: TokenFacts, tt: CompiledTokenType) -> Decision | None:
    """A token's own endpoint list (Commvault custom scope) narrows its type."""
    if token.path_prefixes is None:
        if tt.spec.requires_token_prefixes:
            return _deny(tt, Reason.TOKEN_SCOPE_MISSING, "token_path_prefixes", "this token type needs the token's own endpoint list")
        return None
    segments, mode = request.target.segments, tt.spec.token_prefix_match
    if any(entry_opens(mode, p, segments, tt.case_insensitive) for p in token.path_prefixes):
        return None
    return _deny(tt, Reason.PREFIX_NOT_ALLOWED, "token_path_prefixes", "the path is outside the token's allowed endpoints")


def _check_query(request: RequestFacts, tt: CompiledTokenType, allowing: str) -> Decision | None:
    """The allowing route's own query rule when it has one (it replaces the type's), else the type's."""
    route_rule = tt.route_queries.get(allowing)
    rule = route_rule if route_rule is not None else tt.spec.query
    if rule is None:
        return None
    bad = rule.first_violation(request.target.query_names)
    if bad is None:
        return None
    part = "query" if route_rule is None else "query/" + allowing.removeprefix(tt.rule_id("routes/"))
    return _deny(tt, Reason.QUERY_PARAM_NOT_ALLOWED, part, f"query parameter {bad!r} is not allowed")


def _deny(tt: CompiledTokenType, reason: Reason, part: str, detail: str) -> Decision:
    return deny(reason, detail, rule=tt.rule_id(part), token_type=tt.spec.name)
