"""How long one decision takes as a token type grows: 10, 1,000 and 10,000 routes.

``python -m bench.decide`` prints microseconds per decision for an allowed
route, a denied query and an unmatched path.  Routes compile into a segment
trie, so the three columns should stay flat as the route count grows.
"""

from __future__ import annotations

import ipaddress
import timeit

from proxy.paths import parse_target
from proxy.policy.compile import compile_pack
from proxy.policy.decide import RequestFacts, decide
from proxy.policy.load import load_pack_text
from proxy.token_facts import TokenFacts

CASES = {
    "allowed": "/api/generated{last}/abc-123?limit=5",
    "denied query": "/api/generated{last}/abc-123?sort=name",
    "no route": "/api/nothing/here",
}


def pack_with(routes: int) -> str:
    lines = "\n".join(f"      - GET /api/generated{i}/{{id}}" for i in range(routes))
    return f"""
pack: sized
token_types:
  t:
    routes:
{lines}
    deny: ["* /api/generated0/{{id}}/delete"]
    query: {{allow: [offset, limit]}}
    client_ips: [127.0.0.0/8, "10.0.0.0 - 10.0.0.255"]
"""


def main() -> None:
    token = TokenFacts(token_type="t", token_hash="bench")
    client = ipaddress.ip_address("127.0.0.1")
    print(f"{'routes':>8} " + " ".join(f"{name + ' us':>16}" for name in CASES))
    for count in (10, 1_000, 10_000):
        pack = compile_pack(load_pack_text(pack_with(count), "sized.yaml"))
        timings = []
        for template in CASES.values():
            facts = RequestFacts("GET", parse_target(template.format(last=count - 1)), client)
            number = 20_000
            seconds = min(timeit.repeat(lambda facts=facts, pack=pack: decide(facts, token, pack), number=number, repeat=3))
            timings.append(seconds / number * 1e6)
        print(f"{count:>8} " + " ".join(f"{t:>16.2f}" for t in timings))


if __name__ == "__main__":
    main()
