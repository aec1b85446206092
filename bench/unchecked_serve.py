"""labgate with its checks taken out, for the benchmark only: ``python -m bench.unchecked_serve -- serve ARGS``.

What labgate's design costs before any check: the same process, server,
routing, request ids, header allow model, upstream transport and answer as
``labgate serve``, but every routed request is forwarded as allowed without
looking at it.  Taken out, by replacing four methods in this process only:

* the request's checks (:meth:`Gateway._handle_routed`): request shape, the
  token (verification, revocation, lifetimes), the client IP, the policy
  decision, rate limits and in-flight caps;
* the token's use (:meth:`Forwarder.record_use`: idle-lifetime bookkeeping and
  the live-token count);
* the request's record (:meth:`Recorder.record`: metrics and the decision log);
* the upstream latency histogram (:meth:`TalliedHistogram.observe`).

With no token read, none is re-emitted to the appliance either: its request
lacks the ``Authorization`` line labgate's carries, a few dozen bytes.

``bench.run --unchecked`` measures it beside labgate with every check on: the
difference is what the checks cost, and its ratio to the bare proxy is the
most this design can reach.  labgate itself has no setting that skips its checks
(a type in shadow mode still runs every one; it only forwards what they deny);
this module exists only here, and is never a way to run labgate.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web


def replacements() -> dict[tuple[type, str], Callable[..., Any]]:
    """Each method taken out, by class and name, with what stands in for it (see the module's docstring)."""
    from proxy.gateway.app import Gateway
    from proxy.gateway.exchange import Routed
    from proxy.gateway.forwarder import Forwarder
    from proxy.gateway.recorder import Recorder
    from proxy.metric_tallies import TalliedHistogram
    from proxy.policy.decide import Decision
    from proxy.reasons import Reason

    allowed = Decision(True, Reason.ALLOWED, "unchecked")

    def forward_unchecked(self: Gateway, routed: Routed) -> Awaitable[web.StreamResponse]:
        return self.forwarder.forward(routed, allowed)

    def nothing(*args: Any, **kwargs: Any) -> None:
        return None

    return {
        (Gateway, "_handle_routed"): forward_unchecked,
        (Forwarder, "record_use"): nothing,
        (Recorder, "record"): nothing,
        (TalliedHistogram, "observe"): nothing,
    }


def take_checks_out() -> None:
    """Replace the four methods; every other part of labgate runs as it is.

    A method that is not there any more (renamed in labgate) stops this with a message:
    setting it would only add an attribute nothing calls, and the checks would stay on.
    """
    stand_ins = replacements()
    missing = [f"{owner.__name__}.{name}" for owner, name in stand_ins if not callable(getattr(owner, name, None))]
    if missing:
        raise SystemExit(f"bench.unchecked_serve: labgate has no {', '.join(missing)} any more; update this module")
    for (owner, name), stand_in in stand_ins.items():
        setattr(owner, name, stand_in)


def main() -> int:
    separator, *args = sys.argv[1:] or ["?"]
    if separator != "--":
        raise SystemExit("usage: python -m bench.unchecked_serve -- serve --config FILE")
    take_checks_out()
    from proxy.cli import main as labgate

    sys.argv = ["labgate", *args]
    return int(labgate() or 0)


if __name__ == "__main__":
    sys.exit(main())
