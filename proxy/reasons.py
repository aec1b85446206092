"""Every reason labgate gives for a decision, defined once.

The HTTP layer, metrics, decision logs and ``labgate explain`` all use these
values; nothing compares error messages.  Each reason carries the HTTP status it
maps to and its OAuth error code: for 401 and 403 ``insufficient_scope`` answers,
the RFC 6750 section 3.1 code that goes into ``WWW-Authenticate``.
"""

from __future__ import annotations

import enum


class Reason(enum.Enum):
    """A stable reason code, its HTTP status and its OAuth error code."""

    def __new__(cls, code: str, status: int, error: str) -> Reason:
        member = object.__new__(cls)
        member._value_ = code
        return member

    def __init__(self, code: str, status: int, error: str) -> None:
        self.code = code
        self.status = status
        self.error = error

    # The one way to be allowed.
    ALLOWED = ("allowed", 200, "")

    # The request itself cannot be decided on (checked before any policy).
    BAD_REQUEST = ("bad_request", 400, "invalid_request")
    AMBIGUOUS_PATH = ("ambiguous_path", 400, "invalid_request")
    BAD_QUERY = ("bad_query", 400, "invalid_request")
    METHOD_NOT_SUPPORTED = ("method_not_supported", 405, "invalid_request")
    NO_UPSTREAM = ("no_upstream", 404, "not_found")

    # 1. Authorization header (RFC 6750 section 2.1).
    MISSING_TOKEN = ("missing_token", 401, "invalid_request")
    MALFORMED_AUTHORIZATION = ("malformed_authorization", 401, "invalid_request")

    # 2. The token itself.
    MALFORMED_TOKEN = ("malformed_token", 401, "invalid_token")
    BAD_SIGNATURE = ("bad_signature", 401, "invalid_token")
    ALGORITHM_NOT_ALLOWED = ("algorithm_not_allowed", 401, "invalid_token")
    UNKNOWN_KEY = ("unknown_key", 401, "invalid_token")
    TOKEN_EXPIRED = ("token_expired", 401, "invalid_token")
    TOKEN_NOT_YET_VALID = ("token_not_yet_valid", 401, "invalid_token")
    WRONG_ISSUER = ("wrong_issuer", 401, "invalid_token")
    WRONG_AUDIENCE = ("wrong_audience", 401, "invalid_token")
    MISSING_CLAIM = ("missing_claim", 401, "invalid_token")
    NO_TOKEN_TYPE = ("no_token_type", 401, "invalid_token")
    KEYS_UNAVAILABLE = ("keys_unavailable", 503, "temporarily_unavailable")
    # The token type's lifetimes (policy ``lifetimes``), enforced through the store.
    TTL_EXPIRED = ("ttl_expired", 401, "invalid_token")
    IDLE_EXPIRED = ("idle_expired", 401, "invalid_token")
    ABSOLUTE_EXPIRED = ("absolute_expired", 401, "invalid_token")
    STORE_UNAVAILABLE = ("store_unavailable", 503, "temporarily_unavailable")
    REVOKED = ("revoked", 401, "invalid_token")
    # A token claims (exp - iat) a longer life than its type's absolute lifetime (or ttl) allows.
    LIFETIME_TOO_LONG = ("lifetime_too_long", 401, "invalid_token")
    TOKEN_TOO_LARGE = ("token_too_large", 401, "invalid_token")
    # Opaque tokens: an ``observe`` source never saw it issued; an ``introspect``
    # endpoint says it is not active (RFC 7662 section 2.2), or cannot be asked.
    UNKNOWN_TOKEN = ("unknown_token", 401, "invalid_token")
    TOKEN_INACTIVE = ("token_inactive", 401, "invalid_token")
    INTROSPECTION_UNAVAILABLE = ("introspection_unavailable", 503, "temporarily_unavailable")

    # 3. Client IP.
    CLIENT_IP_NOT_ALLOWED = ("client_ip_not_allowed", 403, "insufficient_scope")
    CLIENT_IP_UNKNOWN = ("client_ip_unknown", 403, "insufficient_scope")

    # 4. Operation, method and path.
    OPERATION_FORBIDDEN = ("operation_forbidden", 403, "insufficient_scope")
    METHOD_NOT_ALLOWED = ("method_not_allowed", 403, "insufficient_scope")
    ROUTE_NOT_ALLOWED = ("route_not_allowed", 403, "insufficient_scope")
    PREFIX_NOT_ALLOWED = ("prefix_not_allowed", 403, "insufficient_scope")
    TOKEN_SCOPE_MISSING = ("token_scope_missing", 403, "insufficient_scope")

    # 5. Query parameters.
    QUERY_PARAM_NOT_ALLOWED = ("query_param_not_allowed", 403, "insufficient_scope")

    # An appliance's own token endpoint, passed through by an ``observe`` source
    # (RFC 6749 section 5.2 error codes).
    BAD_TOKEN_REQUEST = ("bad_token_request", 400, "invalid_request")
    GRANT_NOT_ALLOWED = ("grant_not_allowed", 400, "unsupported_grant_type")
    TOKEN_ANSWER_UNREADABLE = ("token_answer_unreadable", 502, "bad_gateway")

    # labgate's own token endpoint (the token service, RFC 6749 section 5.2 error codes).
    UNSUPPORTED_GRANT_TYPE = ("unsupported_grant_type", 400, "unsupported_grant_type")
    CLIENT_AUTHENTICATION_FAILED = ("client_authentication_failed", 401, "invalid_client")
    CLIENT_NOT_AUTHORIZED = ("client_not_authorized", 400, "unauthorized_client")
    INVALID_GRANT = ("invalid_grant", 400, "invalid_grant")
    REFRESH_TOKEN_REUSED = ("refresh_token_reused", 400, "invalid_grant")
    RENEWAL_ENDED = ("renewal_ended", 400, "invalid_grant")
    SCOPE_NOT_ALLOWED = ("scope_not_allowed", 400, "invalid_scope")
    UNKNOWN_AUDIENCE = ("unknown_audience", 400, "invalid_target")
    TARGETS_DIFFER = ("targets_differ", 400, "invalid_target")  # audience and resource (RFC 8707) name different upstreams

    # The token service's management API.
    ADMIN_UNAUTHORIZED = ("admin_unauthorized", 401, "unauthorized")
    TOKEN_MANAGEMENT_FORBIDDEN = ("token_management_forbidden", 403, "access_denied")
    BAD_ADMIN_REQUEST = ("bad_admin_request", 400, "invalid_request")
    ADMIN_METHOD_NOT_ALLOWED = ("admin_method_not_allowed", 405, "invalid_request")
    NOT_FOUND = ("not_found", 404, "not_found")
    ALREADY_EXISTS = ("already_exists", 409, "conflict")

    # Forward-auth (nginx auth_request, Traefik ForwardAuth): the question itself.
    FORWARD_AUTH_UNTRUSTED = ("forward_auth_untrusted", 403, "access_denied")
    FORWARD_AUTH_HEADERS = ("forward_auth_headers", 400, "invalid_request")
    METHOD_OVERRIDE = ("method_override", 400, "invalid_request")
    # A body on a method that may not carry one (GET HEAD DELETE OPTIONS) unless the pack's ``bodies`` lists the route.
    BODY_NOT_ALLOWED = ("body_not_allowed", 400, "invalid_request")

    # Forwarding and limits.
    HEADERS_TOO_LARGE = ("headers_too_large", 431, "invalid_request")
    TOO_MANY_CONNECTIONS = ("too_many_connections", 503, "temporarily_unavailable")
    BODY_TOO_LARGE = ("body_too_large", 413, "invalid_request")
    # The client's side failed while its body streamed upstream: never counted as an appliance error.
    BODY_TIMEOUT = ("body_timeout", 408, "invalid_request")
    CLIENT_ABORTED = ("client_aborted", 499, "client_closed_request")
    # Protecting the appliances: a rate limit reached (never forwarded), or max_in_flight full past the queue time.
    RATE_LIMITED = ("rate_limited", 429, "too_many_requests")
    UPSTREAM_BUSY = ("upstream_busy", 503, "temporarily_unavailable")
    UPSTREAM_UNREACHABLE = ("upstream_unreachable", 502, "bad_gateway")
    UPSTREAM_TIMEOUT = ("upstream_timeout", 504, "gateway_timeout")
    # The credential labgate holds for an appliance (an upstream's ``credential``): its login
    # failed, or the appliance answered 401 to it (whose body may echo it: never passed on).
    UPSTREAM_CREDENTIAL_UNAVAILABLE = ("upstream_credential_unavailable", 503, "temporarily_unavailable")
    UPSTREAM_CREDENTIAL_REJECTED = ("upstream_credential_rejected", 502, "bad_gateway")
    INTERNAL_ERROR = ("internal_error", 500, "server_error")
    # Still in flight when the shutdown's drain deadline ran out: the connection was closed
    # without an answer (logged with this reason; a client sees no status at all).
    SHUTDOWN_CUT = ("shutdown_cut", 503, "temporarily_unavailable")
    # Not a request's reason: a config, pack or command line labgate cannot use (reload refused, check, CLI).
    CONFIG_PROBLEM = ("config_problem", 500, "server_error")

    @property
    def challenges_bearer(self) -> bool:
        """401 answers, and 403 ``insufficient_scope`` ones, carry ``WWW-Authenticate: Bearer`` (RFC 6750 section 3)."""
        return self.status == 401 or self.error == "insufficient_scope"
