"""The one root of every error labgate raises on purpose, and the reason code it carries.

Foreign exceptions (aiohttp's, the OS's, PyJWT's, redis-py's, sqlite3's, YAML's)
are mapped into this tree at the boundary where they happen, so code above a
boundary catches labgate's errors by type and never digs through ``__cause__``.
Each error carries a :class:`~proxy.reasons.Reason`: the stable code that the
HTTP answer, metrics, the decision log and ``labgate explain`` all use.

LabgateError
├── requests and forwarding
│   ├── TargetError                 (proxy.paths: the path contract)
│   ├── UpstreamError               (proxy.gateway.transport: the appliance failed)
│   ├── ClientBodyError             (proxy.gateway.transport: the client's body failed)
│   │   └── FormOverride            (proxy.gateway.request_shape)
│   ├── UpstreamBusy, Busy          (proxy.gateway.inflight, proxy.gateway.protect: max_in_flight full)
│   ├── BodyTooLarge                (proxy.gateway.errors)
│   └── AnswerTooLarge              (proxy.gateway.token_endpoint)
├── tokens and keys
│   ├── KeysUnavailable             (proxy.verification_keys)
│   ├── BadTokenRequest             (proxy.tokens.observe)
│   ├── MalformedNarrowing          (proxy.token_narrowing)
│   ├── DevTokenRefused             (proxy.tokens.dev_token)
│   └── InvalidAddress              (proxy.ipaddrs: an address labgate will not interpret)
├── state and credentials
│   ├── StoreUnavailable            (proxy.store.base)
│   │   └── NoticesLost             (proxy.store.redis_notices: the revocation notice channel)
│   ├── CredentialUnavailable       (proxy.credentials.base)
│   └── LoginFailed                 (proxy.credentials.oauth)
├── the token service
│   ├── TokenRefused                (proxy.gateway.token_service.token_endpoint)
│   ├── ClientAuthenticationFailed  (proxy.gateway.token_service.token_request)
│   ├── NoSuchAudience, TargetsDiffer (proxy.gateway.token_service.audiences)
│   ├── SigningKeyUnusable          (proxy.issuer.keys)
│   ├── MalformedRecord, MalformedHash (proxy.issuer.records, proxy.issuer.secrets_hash)
│   ├── AdminError                  (proxy.gateway.token_service.admin.router)
│   ├── DirectoryError              (proxy.issuer.directory)
│   ├── EmergencyClientProblem      (proxy.issuer.emergency_clients)
│   └── ServiceAccountProblem, NotWithinAllowlist (proxy.issuer.service_accounts, .account_allowlists)
└── configuration and the CLI
    ├── ConfigError                 (proxy.yamlsource)
    ├── MissingPath                 (proxy.policy.testing)
    └── WorkersRefused              (proxy.workers)

Errors private to one module (a source's early exit) subclass it too; a test
walks the package and fails on any exception class outside this tree.
"""

from __future__ import annotations

from proxy.reasons import Reason


class LabgateError(Exception):
    """An error labgate raises on purpose: a safe ``detail`` (never a token or secret) and a ``reason``."""

    reason: Reason = Reason.INTERNAL_ERROR

    def __init__(self, detail: str = "", reason: Reason | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        if reason is not None:
            self.reason = reason
