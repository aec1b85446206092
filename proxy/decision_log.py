"""One JSON line per request: what was decided, why, and about whom.

A token is only ever named by its short hash; there is no field a token,
secret or password could travel in.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass

logger = logging.getLogger("labgate.decisions")


@dataclass(frozen=True)
class DecisionRecord:
    request_id: str
    upstream: str | None
    method: str
    path: str | None
    rule: str | None
    client_ip: str | None
    peer: str | None
    token_type: str | None
    token_hash: str | None
    subject: str | None
    allowed: bool
    reason: str
    status: int
    upstream_status: int | None
    duration_ms: float
    # Forwarded only because the token type is in shadow mode: ``reason`` and
    # ``rule`` say what would have denied it.  Written only when true.
    shadow: bool = False
    # A forward-auth question (nginx auth_request, Traefik ForwardAuth): the
    # proxy in front forwards when allowed, labgate never does.  Written only when true.
    forward_auth: bool = False

    def to_json(self) -> str:
        fields = dict(self.__dict__)
        if not self.shadow:
            del fields["shadow"]
        if not self.forward_auth:
            del fields["forward_auth"]
        now = time.time()
        # Milliseconds: lines from several workers and replicas are merged by time.
        fields["time"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"
        fields["decision"] = "allow" if self.allowed else "deny"
        del fields["allowed"]
        return json.dumps(fields, separators=(",", ":"))


def wants_decision_log(allowed: bool, level: str) -> bool:
    """``level`` is the config's ``decision_log``: all, denials or off."""
    if level == "off" or (level == "denials" and allowed):
        return False
    return logger.isEnabledFor(logging.INFO)


def log_decision(record: DecisionRecord, level: str) -> None:
    """A shadowed request counts as a denial for ``decision_log: denials``: it is what a rollout watches."""
    if wants_decision_log(record.allowed and not record.shadow, level):
        logger.info(record.to_json())
