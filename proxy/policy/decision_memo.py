"""The decision for a repeated request, remembered: :func:`~proxy.policy.decide.decide` is pure.

API clients repeat themselves: the same token asks for the same few targets
from the same address.  ``decide`` reads nothing but its arguments, so the
decision for the same method, target, client address and verified token under
the same pack is the same decision; remembering it turns the route trie walk,
the deny rules, the allowlists and the query rules into one dict lookup.

The arguments are recognised by identity, not equality, because that is what
is cheap and exact here: a checked target comes from the gateway's route cache,
an address from :func:`proxy.ipaddrs.parse_ip`'s cache, verified token facts from
the token source's cache, each one object for as long as it is cached.  An
entry keeps its own arguments alive, so an ``id`` in a key can never be reused
by another object while the entry exists; the arguments are compared again by
identity on every hit all the same.  A new object for the same facts is only a
miss.  Token rejections are decided afresh (they are new objects each time and
cost nothing to decide).
"""

from __future__ import annotations

from proxy.ipaddrs import IPAddress
from proxy.paths import RequestTarget
from proxy.policy.compile import CompiledPack
from proxy.policy.decide import Decision, RequestFacts, decide
from proxy.token_facts import TokenFacts, TokenRejection

# Distinct (method, target, address, token) combinations remembered; then the memo starts again.
MAX_REMEMBERED = 4096

_Entry = tuple[RequestTarget, "IPAddress | None", TokenFacts, Decision]


class DecisionMemo:
    """:func:`decide` under one compiled pack, remembered per (method, target, client address, token)."""

    def __init__(self, pack: CompiledPack, max_remembered: int = MAX_REMEMBERED) -> None:
        self.pack = pack
        self._max = max_remembered
        self._remembered: dict[tuple[str, int, int, int], _Entry] = {}

    def decide(
        self, method: str, target: RequestTarget, client_ip: IPAddress | None, token: TokenFacts | TokenRejection
    ) -> Decision:
        """What :func:`decide` answers for these facts under this pack."""
        if isinstance(token, TokenRejection):
            return decide(RequestFacts(method, target, client_ip), token, self.pack)
        key = (method, id(target), id(client_ip), id(token))
        entry = self._remembered.get(key)
        if entry is not None and entry[0] is target and entry[1] is client_ip and entry[2] is token:
            return entry[3]
        decision = decide(RequestFacts(method, target, client_ip), token, self.pack)
        if len(self._remembered) >= self._max:
            self._remembered.clear()  # bounded: targets and tokens are client-controlled
        self._remembered[key] = (target, client_ip, token, decision)
        return decision
