"""Recording a request: its metrics, its decision-log line, and the error answer of a refused one.

One place for both, so every refusal is counted and logged exactly as an
allowed request is, whichever part of the gateway refused it.
"""

from __future__ import annotations

import time

from aiohttp import web

from proxy.config import Config
from proxy.decision_log import DecisionRecord, log_decision, wants_decision_log
from proxy.gateway.errors import error_response
from proxy.gateway.exchange import Exchange, UpstreamRuntime
from proxy.metrics import GatewayMetrics
from proxy.policy.decide import Decision, deny
from proxy.reasons import Reason
from proxy.token_facts import TokenFacts

# Refusals that leave part of the client's body unread: the connection cannot be reused.
_BODY_LEFT_UNREAD = frozenset(
    {Reason.BODY_TOO_LARGE, Reason.BODY_TIMEOUT, Reason.CLIENT_ABORTED, Reason.METHOD_OVERRIDE, Reason.BAD_REQUEST}
)


class Recorder:
    """Counts, logs and answers refusals for one config version."""

    def __init__(self, config: Config, metrics: GatewayMetrics) -> None:
        self._decision_log = config.decision_log
        self.metrics = metrics

    def refuse(self, exchange: Exchange, reason: Reason, detail: str, *, allowed: Decision | None = None) -> web.Response:
        """Answer with an error; ``allowed`` is the decision of a request that failed after it."""
        if allowed is None:
            decision = deny(reason, detail)
        else:
            decision = deny(reason, detail, rule=allowed.rule, token_type=allowed.token_type)
        self.record(exchange, decision)
        response = error_response(reason, detail, exchange.request_id, _error_format(exchange))
        if reason in _BODY_LEFT_UNREAD:
            response.force_close()  # the rest of the body is never read
        return response

    def refuse_decided(self, exchange: Exchange, decision: Decision) -> web.Response:
        """A request the policy denied: recorded with the rule that decided it, and answered."""
        self.record(exchange, decision)
        return error_response(decision.reason, decision.detail, exchange.request_id, _error_format(exchange))

    def upstream_failed(
        self, exchange: Exchange, runtime: UpstreamRuntime, reason: Reason, detail: str, allowed: Decision
    ) -> web.Response:
        """An allowed request the appliance (or labgate's credential for it) failed: an upstream error, not a denial."""
        self.metrics.upstream_errors.labels(runtime.upstream.name, reason.code).inc()
        return self.refuse(exchange, reason, detail, allowed=allowed)

    def shadowed(self, runtime: UpstreamRuntime, decision: Decision) -> None:
        """A denial forwarded anyway because its type is in shadow mode."""
        self.metrics.shadow_denial(runtime.upstream.name, decision.token_type or "none", decision.reason.code)

    def record(self, exchange: Exchange, decision: Decision, upstream_status: int | None = None) -> None:
        elapsed = time.perf_counter() - exchange.started
        upstream = exchange.runtime.upstream.name if exchange.runtime else None
        outcome = "allow" if decision.allowed else "deny"
        self.metrics.observe_request(upstream or "none", decision.token_type or "none", outcome, decision.reason.code, elapsed)
        if decision.allowed and not decision.shadow and self._decision_log == "denials":
            return  # the production setting's forwarded requests: counted, not logged (no call to ask)
        if not wants_decision_log(decision.allowed and not decision.shadow, self._decision_log):
            return
        facts = exchange.token if isinstance(exchange.token, TokenFacts) else None
        log_decision(
            DecisionRecord(
                request_id=exchange.request_id,
                upstream=upstream,
                method=(exchange.method or exchange.request.method)[:16],
                path=exchange.target.path if exchange.target else None,
                rule=decision.rule,
                client_ip=str(exchange.client_ip) if exchange.client_ip else None,
                peer=exchange.request.remote,
                token_type=decision.token_type,
                token_hash=facts.token_hash if facts else None,
                subject=facts.subject if facts else None,
                allowed=decision.allowed,
                reason=decision.reason.code,
                status=upstream_status or decision.status,
                upstream_status=upstream_status,
                duration_ms=round(elapsed * 1000, 3),
                shadow=decision.shadow,
                forward_auth=exchange.forward_auth,
            ),
            self._decision_log,
        )


def _error_format(exchange: Exchange) -> str:
    """The error body shape of the upstream the request was routed to (labgate's before routing)."""
    return exchange.runtime.pack.pack.error_format if exchange.runtime is not None else "labgate"
