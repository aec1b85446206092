"""When each reason code is given: the one sentence per code the reference page prints.

Codes, statuses and OAuth error codes come from :class:`proxy.reasons.Reason`
itself; a test fails when a reason has no note here, so a new code cannot
reach the reference without saying when it is given.
"""

from __future__ import annotations

from proxy.reasons import Reason

WHEN: dict[Reason, str] = {
    Reason.ALLOWED: "every check passed; forwarded (the status is the upstream's)",
    Reason.BAD_REQUEST: "target not in origin form (`http://…`, `*`), or carries `#`",
    Reason.AMBIGUOUS_PATH: "the path breaks the path contract",
    Reason.BAD_QUERY: "the query string breaks the path contract",
    Reason.METHOD_NOT_SUPPORTED: "a method no route can name (`TRACE`, `CONNECT`, …)",
    Reason.NO_UPSTREAM: "no upstream serves this host and path",
    Reason.MISSING_TOKEN: (
        "no token: no credential header, or only another authentication method's (`Basic`); "
        "the challenge is a bare `Bearer realm=\"labgate\"`, RFC 6750 section 3.1"
    ),
    Reason.MALFORMED_AUTHORIZATION: "not exactly one well-formed `Bearer` credential; token in the query",
    Reason.MALFORMED_TOKEN: "not a compact JWS, bad JSON, duplicate names in the JOSE header or the claims, `crit` header, bad claim types",
    Reason.BAD_SIGNATURE: "the signature does not verify",
    Reason.ALGORITHM_NOT_ALLOWED: "`alg` not pinned for this source (`none` never is)",
    Reason.UNKNOWN_KEY: "no pinned key or JWKS key for this `kid` and algorithm",
    Reason.TOKEN_EXPIRED: "`exp` passed (beyond the leeway)",
    Reason.TOKEN_NOT_YET_VALID: "`nbf` in the future (beyond the leeway)",
    Reason.WRONG_ISSUER: "`iss` not the configured value",
    Reason.WRONG_AUDIENCE: "`aud` not the configured value",
    Reason.MISSING_CLAIM: "`exp`, `iss`, `aud` or a `required_claims` entry is missing",
    Reason.NO_TOKEN_TYPE: "no `types` matcher matched the claims, or the pack lacks the type",
    Reason.KEYS_UNAVAILABLE: "JWKS never fetched successfully (or labgate's own signing keys cannot be read)",
    Reason.TTL_EXPIRED: "the type's `ttl` lifetime since issue (`iat`) has passed",
    Reason.IDLE_EXPIRED: "the token was not used within the type's `idle` lifetime",
    Reason.ABSOLUTE_EXPIRED: "the type's `absolute` lifetime since issue (`iat`) has passed",
    Reason.STORE_UNAVAILABLE: (
        "the store cannot be reached, or did not answer within its `timeout`, to check revocations and lifetimes "
        "(fail closed), or a rate limit (unless every limit of the request says `store_failure: open`)"
    ),
    Reason.REVOKED: (
        "the token, its subject, its client id (`client_id`/`azp` claim) or its refresh chain "
        "(`chain` claim, labgate's own tokens) was revoked at or after its issue"
    ),
    Reason.LIFETIME_TOO_LONG: (
        "the token's own `exp` − `iat` is longer than its type's `absolute` lifetime (or `ttl`, when that is its only one)"
    ),
    Reason.TOKEN_TOO_LARGE: (
        "a JWT longer than its source's `max_token_bytes` (default 4096), refused before any key lookup or signature work"
    ),
    Reason.UNKNOWN_TOKEN: (
        "`observe`: labgate never saw this opaque token issued by this appliance (or it expired, or was revoked there)"
    ),
    Reason.TOKEN_INACTIVE: "`introspect`: the authorization server answered `active: false`",
    Reason.INTROSPECTION_UNAVAILABLE: (
        "`introspect`: the endpoint cannot be reached or answers something other than an introspection answer (fail closed)"
    ),
    Reason.CLIENT_IP_NOT_ALLOWED: "the client IP is outside the type's `client_ips` or the token's own IP allowlist",
    Reason.CLIENT_IP_UNKNOWN: "the client IP is unknown (an unreadable forwarding chain) and the type limits IPs",
    Reason.OPERATION_FORBIDDEN: "a `deny` rule matched",
    Reason.METHOD_NOT_ALLOWED: "the path is allowed, with another method",
    Reason.ROUTE_NOT_ALLOWED: "no route matched",
    Reason.PREFIX_NOT_ALLOWED: "no prefix matched (a type with prefixes only), or the token's own prefixes exclude the path",
    Reason.TOKEN_SCOPE_MISSING: "the type requires the token's own endpoint list (`requires_token_prefixes`) and the token has none",
    Reason.QUERY_PARAM_NOT_ALLOWED: (
        "a query parameter the type's `query` rule (or the allowing route's own) does not allow (a `public` route takes none)"
    ),
    Reason.BAD_TOKEN_REQUEST: (
        "`observe` token endpoint: not a form, a parameter twice, no `grant_type`, parameters in the query, two "
        "different client ids; labgate's own token endpoint: the same, a missing parameter, two ways of client authentication"
    ),
    Reason.GRANT_NOT_ALLOWED: (
        "`observe` token endpoint: no `types` rule maps this grant to a token type of the upstream's pack; labgate's own: "
        "the upstream's `grants` do not map it (`error: unsupported_grant_type`)"
    ),
    Reason.TOKEN_ANSWER_UNREADABLE: "`observe` token endpoint: a 200 answer without a usable `access_token`, or over 64 KiB",
    Reason.UNSUPPORTED_GRANT_TYPE: "labgate's token endpoint: a `grant_type` it does not know",
    Reason.CLIENT_AUTHENTICATION_FAILED: (
        "labgate's token endpoint: unreadable, unknown or wrong client credentials (`invalid_client`, `WWW-Authenticate: Basic`)"
    ),
    Reason.CLIENT_NOT_AUTHORIZED: "labgate's token endpoint: an API client limited to another audience (`unauthorized_client`)",
    Reason.INVALID_GRANT: (
        "labgate's token endpoint: wrong username or password (\"Invalid credentials\"); an unknown, expired or revoked refresh token"
    ),
    Reason.REFRESH_TOKEN_REUSED: "a used refresh token presented again: its whole chain is revoked (`invalid_grant`)",
    Reason.RENEWAL_ENDED: "a refresh chain past its type's `refresh_until` (`invalid_grant`)",
    Reason.SCOPE_NOT_ALLOWED: "`scope` asks for more than the token type (`invalid_scope`)",
    Reason.UNKNOWN_AUDIENCE: (
        "`audience` or `resource` names no upstream labgate issues tokens for, or `resource` is not an absolute URI "
        "(`invalid_target`)"
    ),
    Reason.TARGETS_DIFFER: "`audience` and `resource` (or two `resource` values) name different upstreams (`invalid_target`)",
    Reason.ADMIN_UNAUTHORIZED: (
        "management API: no or wrong administrator credentials (`WWW-Authenticate: Basic realm=\"labgate-admin\"`)"
    ),
    Reason.TOKEN_MANAGEMENT_FORBIDDEN: "management API: a `Bearer` token (a labgate-issued one above all) never manages tokens",
    Reason.BAD_ADMIN_REQUEST: "management API: a body, field or query it does not take",
    Reason.ADMIN_METHOD_NOT_ALLOWED: "management API: a method the resource does not take",
    Reason.NOT_FOUND: "management API: no such resource",
    Reason.ALREADY_EXISTS: "management API: the name or id is taken",
    Reason.FORWARD_AUTH_UNTRUSTED: "a forward-auth question from a peer outside `trusted_proxies`",
    Reason.FORWARD_AUTH_HEADERS: "a forward-auth question that does not name exactly one method, target and host",
    Reason.METHOD_OVERRIDE: (
        "a method-override header in any spelling, `_method` in the query, or `_method` in a form body; "
        "or a forward-auth question about a request with one"
    ),
    Reason.BODY_NOT_ALLOWED: "a body on `GET`, `HEAD`, `DELETE` or `OPTIONS` on a route the pack does not list under `bodies`",
    Reason.HEADERS_TOO_LARGE: "request line, a header line, or the whole head beyond `limits`",
    Reason.TOO_MANY_CONNECTIONS: "more open client connections than `limits.max_connections` (the connection is closed)",
    Reason.BODY_TOO_LARGE: "body beyond `limits.max_body_bytes` (by `Content-Length`, or counted while streaming)",
    Reason.BODY_TIMEOUT: "the client took longer than `limits.body_timeout` between two pieces of its body (not an appliance error)",
    Reason.CLIENT_ABORTED: (
        "the client went away while sending its body or receiving the answer: "
        "logged and counted as the client's, never as an appliance error"
    ),
    Reason.RATE_LIMITED: (
        "an allowed request past its token type's or its upstream's `rate_limit`; never forwarded "
        "([Protecting the appliances](../concepts/protecting-appliances.md))"
    ),
    Reason.UPSTREAM_BUSY: (
        "`max_in_flight` requests were already at the appliance for the whole `queue_timeout`; never forwarded"
    ),
    Reason.UPSTREAM_UNREACHABLE: "the appliance refused or reset the connection, or its host does not resolve",
    Reason.UPSTREAM_TIMEOUT: "the appliance did not connect or answer in time",
    Reason.UPSTREAM_CREDENTIAL_UNAVAILABLE: (
        "labgate could not log in to the appliance with the upstream's `credential`; nothing forwarded"
    ),
    Reason.UPSTREAM_CREDENTIAL_REJECTED: "the appliance answered 401 to labgate's credential; its answer is not passed on",
    Reason.INTERNAL_ERROR: "an unexpected error in labgate itself (logged with its traceback); the connection is closed",
    Reason.SHUTDOWN_CUT: "decision log only: still in flight at the shutdown's drain deadline; the connection was closed without an answer",
    Reason.CONFIG_PROBLEM: (
        "never a request's answer: a config, pack or command line labgate cannot use "
        "(labgate check, a refused reload in /readyz, the CLI's exit codes)"
    ),
}
