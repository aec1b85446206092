"""Commvault's own renew call, answered by labgate for the service-account tokens it issued.

Commvault's documentation ('Creating an access token for a service account'):
"after thirty minutes, use the Refresh token API" — ``POST
/V4/AccessToken/Renew`` with ``{"accessToken", "refreshToken"}`` — and a
reused pair kills the whole chain.  Commvault's SDK calls it as
``User.renew_access_token``.  When an upstream's tokens are labgate's own
(source ``issuer`` with ``service_accounts``), the appliance has never seen
them and would refuse the call, so labgate answers it itself and nothing is
forwarded:

* the pair in the body is the credential, as at Commvault (the access token
  is usually expired by then); a token in the request's header is neither
  checked nor forwarded;
* the refresh token must be the chain's current one and the access token
  the one issued with it (:mod:`proxy.gateway.token_service.renewal`: a spent
  refresh token revokes the chain);
* the pack still decides the call for the chain's token type and its own
  endpoint list and IP allowlist, as it would decide the forwarded call (a
  Custom token renews only if its entries open the path; a client outside
  the service account's allowlist is refused);
* the answer is Commvault's ``{"tokenInfo": {...}}`` with the new
  ``accessToken`` and ``refreshToken``; refusals come in the pack's error
  format (Commvault's ``{"errorCode", "errorMessage"}``).
"""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from proxy.config import Config
from proxy.gateway.exchange import Routed, UpstreamRuntime
from proxy.gateway.recorder import Recorder
from proxy.gateway.token_service.renewal import ChainRenewal, Client, RenewalRequest, TokenRefused, read_token_request
from proxy.ipaddrs import AddressSet, parse_entry
from proxy.issuer import chains
from proxy.issuer.keys import SigningKeyUnusable
from proxy.issuer.records import RefreshRecord
from proxy.issuer.service_accounts import RECORD_KIND, ServiceTokenRecord
from proxy.paths import RequestTarget
from proxy.policy.decide import Decision, RequestFacts, decide
from proxy.reasons import Reason
from proxy.store.base import Store, StoreUnavailable
from proxy.strict_json import no_duplicate_names
from proxy.token_facts import TokenFacts, token_fingerprint
from proxy.tokens.issuer_source import IssuerSource
from proxy.verification_keys import KeysUnavailable

RENEW_SEGMENTS = ("V4", "AccessToken", "Renew")
RULE = "issuer/service_account_renew"
PAIR = ("accessToken", "refreshToken")


class ServiceTokenRenew:
    """``POST /V4/AccessToken/Renew`` on every upstream whose issuer tokens include service-account tokens."""

    def __init__(self, config: Config, store: Store, renewal: ChainRenewal, recorder: Recorder) -> None:
        self._body_timeout = config.limits.body_timeout
        self._store = store
        self._renewal = renewal
        self._recorder = recorder

    @staticmethod
    def serves(runtime: UpstreamRuntime, method: str, target: RequestTarget) -> bool:
        source = runtime.source
        if method != "POST" or not isinstance(source, IssuerSource) or source.settings.service_accounts is None:
            return False
        if runtime.pack.pack.case_insensitive_paths:
            return tuple(s.casefold() for s in target.segments) == tuple(s.casefold() for s in RENEW_SEGMENTS)
        return target.segments == RENEW_SEGMENTS

    async def handle(self, routed: Routed) -> web.StreamResponse:
        """Renewed, or refused with the reason; the request is recorded either way and never forwarded."""
        exchange = routed.exchange
        try:
            answered = await self._answer(routed)
        except TokenRefused as exc:
            return self._recorder.refuse(exchange, exc.reason, exc.detail)
        except StoreUnavailable:
            return self._recorder.refuse(exchange, Reason.STORE_UNAVAILABLE, "tokens cannot be renewed right now")
        except (KeysUnavailable, SigningKeyUnusable):
            return self._recorder.refuse(exchange, Reason.KEYS_UNAVAILABLE, "tokens cannot be renewed right now")
        if isinstance(answered, Decision):
            return self._recorder.refuse_decided(exchange, answered)
        response, token_type = answered
        self._recorder.record(exchange, Decision(True, Reason.ALLOWED, RULE, token_type))
        return response

    async def _answer(self, routed: Routed) -> tuple[web.Response, str] | Decision:
        """The renewed tokens and their type, or the pack's denial of the call."""
        access, refresh = await self._pair(routed.request)
        now = time.time()
        upstream = routed.runtime.upstream
        record = await chains.peek(self._store, refresh, now=now)
        if record is None:  # unknown, or spent (then its chain is revoked)
            await self._renewal.refuse_unknown(refresh, now)
        service_token = await self._service_token(record, routed.runtime, now)
        decision = decide(RequestFacts("POST", routed.target, routed.exchange.client_ip), _chain_facts(record), routed.runtime.pack)
        if not decision.allowed:
            return decision
        request = RenewalRequest(
            Client(record.client_id, confidential=False, named=True),
            named=lambda: upstream,
            access_fingerprint=token_fingerprint(access),
        )
        renewed = await self._renewal.renew(refresh, request, now)
        headers = {"Cache-Control": "no-store", "Pragma": "no-cache", "X-Request-ID": routed.exchange.request_id}
        answer = web.json_response({"tokenInfo": service_token.info(renewed.issued)}, headers=headers)
        return answer, renewed.record.token_type

    async def _pair(self, request: web.BaseRequest) -> tuple[str, str]:
        """The body's access and refresh token: a JSON object with exactly these two strings."""
        body = await read_token_request(
            request, self._body_timeout, what="renew request", too_large="a renew request is a small JSON object"
        )
        try:
            parsed: Any = json.loads(body, object_pairs_hook=no_duplicate_names)
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict) or set(parsed) != set(PAIR) or not all(isinstance(parsed[k], str) and parsed[k] for k in PAIR):
            raise TokenRefused(Reason.BAD_TOKEN_REQUEST, 'Renew takes a JSON object {"accessToken": "...", "refreshToken": "..."}')
        return parsed["accessToken"], parsed["refreshToken"]

    async def _service_token(self, record: RefreshRecord, runtime: UpstreamRuntime, now: float) -> ServiceTokenRecord:
        """The service-account token the chain belongs to, on this upstream; invalid_grant for any other chain."""
        text = await self._store.get_record(RECORD_KIND, record.client_id, now)
        try:
            found = ServiceTokenRecord.from_json(text) if text is not None else None
        except ValueError:
            found = None
        if found is None or found.upstream != runtime.upstream.name or found.chain != record.chain:
            raise TokenRefused(Reason.INVALID_GRANT, "the refresh token is not a service-account token of this upstream")
        return found


def _chain_facts(record: RefreshRecord) -> TokenFacts:
    """What the chain's next access token will say: the pack decides the renew call on it."""
    client_ips = AddressSet.from_ranges(parse_entry(e) for e in record.client_ips) if record.client_ips is not None else None
    return TokenFacts(
        record.token_type, record.access_fingerprint or "", subject=record.subject,
        path_prefixes=record.path_prefixes, client_ips=client_ips,
    )
