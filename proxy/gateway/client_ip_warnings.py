"""Warnings about client-IP rules that protect less than they look, said once.

``client_ips`` rules compare the client's address: the TCP peer, or the
address a trusted proxy names in ``X-Forwarded-For``/``Forwarded``.  A setup
where that address is not what the operator thinks (every peer trusted, no
proxy trusted behind a load balancer, a peer sending forwarding headers it is
not trusted for) is said in the log, never silently accepted.
"""

from __future__ import annotations

import logging

from aiohttp import web

from proxy.config import Config
from proxy.ipaddrs import ClientIpResolver
from proxy.policy.compile import CompiledPack

logger = logging.getLogger("labgate")

MAX_WARNED_PEERS = 64  # bounded: peers are client-controlled


def has_ip_rules(pack: CompiledPack) -> bool:
    return any(t.spec.client_ips is not None for t in pack.token_types.values())


class ForwardingWarnings:
    """Says once per peer that it sent forwarding headers labgate ignores."""

    def __init__(self, config: Config, resolver: ClientIpResolver) -> None:
        self._config = config
        self._resolver = resolver
        self._warned_peers: set[str] = set()
        self.header = "Forwarded" if config.client_ip_header == "forwarded" else "X-Forwarded-For"  # what it looks for

    def untrusted_forwarding(self, request: web.BaseRequest, peer: str | None, pack: CompiledPack) -> None:
        """IP rules see the TCP peer; say so once when a peer sends forwarding headers we ignore."""
        peer = peer or ""
        if peer in self._warned_peers or len(self._warned_peers) >= MAX_WARNED_PEERS:
            return
        header = self.header
        if header not in request.headers or not has_ip_rules(pack):
            return
        if self._resolver.resolve(peer, {}) in self._config.trusted_proxies:
            return
        self._warned_peers.add(peer)
        logger.warning(
            "peer %s sent %s but is not in trusted_proxies: client_ips rules compare the peer itself; "
            "list the load balancer in trusted_proxies if it is one",
            peer,
            header,
        )


def warn_about_client_ip_rules(config: Config) -> None:
    """Say at start when the trusted-proxy setup makes IP rules weaker than they look."""
    uses_ip_rules = any(has_ip_rules(config.packs[u.pack]) for u in config.upstreams) or any(
        getattr(u.token_source, "client_ips_claim", None) for u in config.upstreams
    )
    if not uses_ip_rules:
        return
    if config.trusted_proxies.covers_everything():
        logger.warning(
            "trusted_proxies covers every address: any client can choose its own IP with %s, "
            "so client_ips rules protect nothing",
            config.client_ip_header,
        )
    elif len(config.trusted_proxies) == 0:
        logger.warning(
            "client_ips rules compare the TCP peer (no trusted_proxies): behind a load balancer "
            "every request would come from the balancer's address; list it in trusted_proxies"
        )
