"""The decision contract, as a table: request + token -> allowed, or which reason."""

from __future__ import annotations

import pytest

from proxy.ipaddrs import AddressSet, parse_ip
from proxy.paths import parse_target
from proxy.policy.compile import compile_pack
from proxy.policy.decide import RequestFacts, decide
from proxy.policy.load import load_pack_text
from proxy.reasons import Reason
from proxy.token_facts import TokenFacts, TokenRejection

SIMPLIVITY = compile_pack(
    load_pack_text(
        """
pack: simplivity
token_types:
  password:
    path_prefixes: [/api]
  emergency:
    routes:
      - GET /api/hosts
      - GET /api/omnistack_clusters
      - GET /api/backups
      - GET /api/datastores
      - GET /api/virtual_machines
      - POST /api/backups/{bkpId}/restore
    query:
      allow: [offset, limit, restore_original]
  office:
    routes: [GET /api/hosts]
    client_ips: ["10.0.0.0/8", "2001:db8::1 - 2001:db8::ffff", "1.1.1.0 – 1.1.1.25"]
  no-sort:
    routes: [GET /api/hosts]
    query:
      deny: [sort, order]
""",
        "simplivity.yaml",
    )
)

COMMVAULT = compile_pack(
    load_pack_text(
        """
pack: commvault
paths: case-insensitive
token_types:
  all:
    path_prefixes: [/]
    deny:
      - POST /V4/AccessToken
      - PUT /V4/AccessToken/{id}
      - DELETE /V4/AccessToken/{id}
  one-touch:
    path_prefixes: [/Client, /MediaAgent, /ClientGroup, /V4/ServerGroup, /FirewallSummary]
  custom:
    path_prefixes: [/]
    requires_token_prefixes: true
    deny:
      - POST /V4/AccessToken
""",
        "commvault.yaml",
    )
)


def token(token_type: str, **extra: object) -> TokenFacts:
    return TokenFacts(token_type=token_type, token_hash="0123456789ab", **extra)  # type: ignore[arg-type]


def request(method: str, target: str, ip: str | None = "192.0.2.10") -> RequestFacts:
    return RequestFacts(method, parse_target(target), parse_ip(ip) if ip else None)


CASES = [
    # (id, pack, token, method, target, ip, expected reason)
    ("emergency_lists_hosts", SIMPLIVITY, token("emergency"), "GET", "/api/hosts", None, Reason.ALLOWED),
    ("emergency_pages_backups", SIMPLIVITY, token("emergency"), "GET", "/api/backups?offset=0&limit=100", None, Reason.ALLOWED),
    ("emergency_restores_a_backup", SIMPLIVITY, token("emergency"), "POST", "/api/backups/3fa2-11/restore?restore_original=false", None, Reason.ALLOWED),
    ("emergency_cannot_sort_hosts", SIMPLIVITY, token("emergency"), "GET", "/api/hosts?sort=name", None, Reason.QUERY_PARAM_NOT_ALLOWED),
    ("emergency_cannot_sort_with_upper_case", SIMPLIVITY, token("emergency"), "GET", "/api/hosts?SORT=name", None, Reason.QUERY_PARAM_NOT_ALLOWED),
    ("emergency_cannot_sort_with_encoded_name", SIMPLIVITY, token("emergency"), "GET", "/api/hosts?s%6Frt=name", None, Reason.QUERY_PARAM_NOT_ALLOWED),
    ("emergency_cannot_sort_with_brackets", SIMPLIVITY, token("emergency"), "GET", "/api/hosts?sort[]=name", None, Reason.QUERY_PARAM_NOT_ALLOWED),
    ("emergency_cannot_hide_sort_after_allowed", SIMPLIVITY, token("emergency"), "GET", "/api/hosts?limit=1&sort=name", None, Reason.QUERY_PARAM_NOT_ALLOWED),
    ("emergency_cannot_filter", SIMPLIVITY, token("emergency"), "GET", "/api/hosts?name=esx*", None, Reason.QUERY_PARAM_NOT_ALLOWED),
    ("emergency_cannot_ask_optional_fields", SIMPLIVITY, token("emergency"), "GET", "/api/hosts?show_optional_fields=true", None, Reason.QUERY_PARAM_NOT_ALLOWED),
    ("emergency_cannot_pick_fields", SIMPLIVITY, token("emergency"), "GET", "/api/virtual_machines?fields=name", None, Reason.QUERY_PARAM_NOT_ALLOWED),
    ("emergency_cannot_get_one_host", SIMPLIVITY, token("emergency"), "GET", "/api/hosts/abc", None, Reason.ROUTE_NOT_ALLOWED),
    ("emergency_cannot_delete_backup", SIMPLIVITY, token("emergency"), "DELETE", "/api/backups/abc", None, Reason.ROUTE_NOT_ALLOWED),
    ("emergency_cannot_post_hosts", SIMPLIVITY, token("emergency"), "POST", "/api/hosts", None, Reason.METHOD_NOT_ALLOWED),
    ("emergency_cannot_head_hosts", SIMPLIVITY, token("emergency"), "HEAD", "/api/hosts", None, Reason.METHOD_NOT_ALLOWED),
    ("emergency_cannot_read_tasks", SIMPLIVITY, token("emergency"), "GET", "/api/tasks/1", None, Reason.ROUTE_NOT_ALLOWED),
    ("emergency_trailing_slash_is_another_path", SIMPLIVITY, token("emergency"), "GET", "/api/hosts/", None, Reason.ROUTE_NOT_ALLOWED),
    ("emergency_routes_are_case_sensitive", SIMPLIVITY, token("emergency"), "GET", "/API/hosts", None, Reason.ROUTE_NOT_ALLOWED),
    ("emergency_restore_param_is_one_segment", SIMPLIVITY, token("emergency"), "POST", "/api/backups/a/b/restore", None, Reason.ROUTE_NOT_ALLOWED),
    ("emergency_restore_param_rejects_odd_characters", SIMPLIVITY, token("emergency"), "POST", "/api/backups/a%20b/restore", None, Reason.ROUTE_NOT_ALLOWED),
    ("password_keeps_the_full_api", SIMPLIVITY, token("password"), "DELETE", "/api/backups/abc?sort=name", None, Reason.ALLOWED),
    ("password_prefix_is_segment_bound", SIMPLIVITY, token("password"), "GET", "/apix/hosts", None, Reason.PREFIX_NOT_ALLOWED),
    ("office_from_inside_cidr", SIMPLIVITY, token("office"), "GET", "/api/hosts", "10.1.2.3", Reason.ALLOWED),
    ("office_from_mapped_ipv6", SIMPLIVITY, token("office"), "GET", "/api/hosts", "::ffff:10.1.2.3", Reason.ALLOWED),
    ("office_from_en_dash_range_end", SIMPLIVITY, token("office"), "GET", "/api/hosts", "1.1.1.25", Reason.ALLOWED),
    ("office_just_past_range", SIMPLIVITY, token("office"), "GET", "/api/hosts", "1.1.1.26", Reason.CLIENT_IP_NOT_ALLOWED),
    ("office_from_ipv6_range", SIMPLIVITY, token("office"), "GET", "/api/hosts", "2001:db8::abcd", Reason.ALLOWED),
    ("office_from_outside", SIMPLIVITY, token("office"), "GET", "/api/hosts", "192.0.2.1", Reason.CLIENT_IP_NOT_ALLOWED),
    ("office_unknown_ip_is_denied", SIMPLIVITY, token("office"), "GET", "/api/hosts", "", Reason.CLIENT_IP_UNKNOWN),
    ("ip_is_checked_before_route", SIMPLIVITY, token("office"), "DELETE", "/api/hosts", "192.0.2.1", Reason.CLIENT_IP_NOT_ALLOWED),
    ("denylist_blocks_sort", SIMPLIVITY, token("no-sort"), "GET", "/api/hosts?Sort=x", None, Reason.QUERY_PARAM_NOT_ALLOWED),
    ("denylist_lets_others_pass", SIMPLIVITY, token("no-sort"), "GET", "/api/hosts?name=x", None, Reason.ALLOWED),
    ("type_missing_from_pack_is_denied", SIMPLIVITY, token("ghost"), "GET", "/api/hosts", None, Reason.NO_TOKEN_TYPE),
    ("commvault_all_reads_clients", COMMVAULT, token("all"), "GET", "/Client", None, Reason.ALLOWED),
    ("commvault_all_cannot_create_tokens", COMMVAULT, token("all"), "POST", "/V4/AccessToken", None, Reason.OPERATION_FORBIDDEN),
    ("commvault_deny_is_case_insensitive", COMMVAULT, token("all"), "POST", "/v4/accesstoken", None, Reason.OPERATION_FORBIDDEN),
    ("commvault_deny_ignores_trailing_slash", COMMVAULT, token("all"), "POST", "/V4/AccessToken/", None, Reason.OPERATION_FORBIDDEN),
    ("commvault_deny_binds_any_id", COMMVAULT, token("all"), "DELETE", "/V4/AccessToken/a%20b", None, Reason.OPERATION_FORBIDDEN),
    ("commvault_all_may_renew", COMMVAULT, token("all"), "POST", "/V4/AccessToken/Renew", None, Reason.ALLOWED),
    ("commvault_one_touch_reads_clients", COMMVAULT, token("one-touch"), "GET", "/client/12", None, Reason.ALLOWED),
    ("commvault_one_touch_client_is_not_clientgroupx", COMMVAULT, token("one-touch"), "GET", "/ClientGroupX", None, Reason.PREFIX_NOT_ALLOWED),
    ("commvault_one_touch_cannot_read_plans", COMMVAULT, token("one-touch"), "GET", "/V2/Plan", None, Reason.PREFIX_NOT_ALLOWED),
    ("commvault_custom_needs_token_prefixes", COMMVAULT, token("custom"), "GET", "/Plan", None, Reason.TOKEN_SCOPE_MISSING),
    ("commvault_custom_token_prefix_allows", COMMVAULT, token("custom", path_prefixes=("/plans",)), "GET", "/Plans/3", None, Reason.ALLOWED),
    ("commvault_custom_client_does_not_open_clientgroup", COMMVAULT, token("custom", path_prefixes=("/Client",)), "GET", "/ClientGroup", None, Reason.PREFIX_NOT_ALLOWED),
    ("commvault_custom_deny_beats_token_prefix", COMMVAULT, token("custom", path_prefixes=("/V4",)), "POST", "/V4/AccessToken", None, Reason.OPERATION_FORBIDDEN),
    ("token_ip_allowlist_narrows", COMMVAULT, token("all", client_ips=AddressSet.parse(["10.0.0.1"])), "GET", "/Client", "10.0.0.2", Reason.CLIENT_IP_NOT_ALLOWED),
    ("token_ip_allowlist_admits", COMMVAULT, token("all", client_ips=AddressSet.parse(["10.0.0.1"])), "GET", "/Client", "10.0.0.1", Reason.ALLOWED),
]


@pytest.mark.parametrize(
    "pack, facts, method, target, ip, expected",
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_decision(pack, facts, method, target, ip, expected) -> None:  # type: ignore[no-untyped-def]
    client = None if ip == "" else (ip or "192.0.2.10")  # "" stands for an unknown client address
    decision = decide(request(method, target, client), facts, pack)
    assert decision.reason is expected, decision
    assert decision.allowed is (expected is Reason.ALLOWED)
    assert decision.status == expected.status


def test_rejected_token_decides_with_its_own_reason() -> None:
    decision = decide(request("GET", "/api/hosts"), TokenRejection(Reason.TOKEN_EXPIRED, "expired"), SIMPLIVITY)
    assert (decision.allowed, decision.reason, decision.status) == (False, Reason.TOKEN_EXPIRED, 401)


def test_allowed_decision_names_the_route() -> None:
    decision = decide(request("POST", "/api/backups/b1/restore"), token("emergency"), SIMPLIVITY)
    assert decision.rule == "simplivity/emergency/routes/POST /api/backups/{bkpId}/restore"
    assert decision.token_type == "emergency"


def test_denied_query_names_the_query_rule() -> None:
    decision = decide(request("GET", "/api/hosts?sort=name"), token("emergency"), SIMPLIVITY)
    assert decision.rule == "simplivity/emergency/query"


def test_explanation_has_the_documented_keys() -> None:
    decision = decide(request("GET", "/api/hosts"), token("emergency"), SIMPLIVITY)
    assert decision.as_explanation() == {
        "allowed": True,
        "status": 200,
        "reason": "allowed",
        "rule": "simplivity/emergency/routes/GET /api/hosts",
        "token_type": "emergency",
    }


# Shadow mode: the same pack with its types rolled out in shadow mode.
SHADOW_SIMPLIVITY = compile_pack(
    load_pack_text(
        """
pack: simplivity
token_types:
  emergency:
    shadow: true
    routes: [GET /api/hosts, "POST /api/backups/{bkpId}/restore"]
    deny: ["DELETE /api/hosts/{id}"]
    query:
      allow: [offset, limit]
  office:
    shadow: true
    routes: [GET /api/hosts]
    client_ips: [10.0.0.0/8]
  custom:
    shadow: true
    path_prefixes: [/api]
    requires_token_prefixes: true
""",
        "simplivity.yaml",
    )
)

SHADOW_CASES = [
    # (id, token, method, target, ip, reason it would be denied for, rule)
    ("emergency_sort_is_shadowed", token("emergency"), "GET", "/api/hosts?sort=name", None, Reason.QUERY_PARAM_NOT_ALLOWED, "simplivity/emergency/query"),
    ("emergency_other_route_is_shadowed", token("emergency"), "GET", "/api/tasks", None, Reason.ROUTE_NOT_ALLOWED, "simplivity/emergency/routes"),
    ("emergency_other_method_is_shadowed", token("emergency"), "DELETE", "/api/backups/b1/restore", None, Reason.METHOD_NOT_ALLOWED, "simplivity/emergency/routes"),
    ("emergency_deny_rule_is_shadowed", token("emergency"), "DELETE", "/api/hosts/h1", None, Reason.OPERATION_FORBIDDEN, "simplivity/emergency/deny/DELETE /api/hosts/{id}"),
    ("office_outside_ip_is_shadowed", token("office"), "GET", "/api/hosts", "192.0.2.1", Reason.CLIENT_IP_NOT_ALLOWED, "simplivity/office/client_ips"),
    ("office_unknown_ip_is_shadowed", token("office"), "GET", "/api/hosts", "", Reason.CLIENT_IP_UNKNOWN, "simplivity/office/client_ips"),
    ("custom_without_token_prefixes_is_shadowed", token("custom"), "GET", "/api/hosts", None, Reason.TOKEN_SCOPE_MISSING, "simplivity/custom/token_path_prefixes"),
    ("custom_outside_token_prefixes_is_shadowed", token("custom", path_prefixes=("/api/hosts",)), "GET", "/api/tasks", None, Reason.PREFIX_NOT_ALLOWED, "simplivity/custom/token_path_prefixes"),
]


@pytest.mark.parametrize(
    "facts, method, target, ip, would_be, rule", [c[1:] for c in SHADOW_CASES], ids=[c[0] for c in SHADOW_CASES]
)
def test_shadow_type_is_allowed_but_says_what_would_deny_it(facts, method, target, ip, would_be, rule) -> None:  # type: ignore[no-untyped-def]
    client = None if ip == "" else (ip or "192.0.2.10")
    decision = decide(request(method, target, client), facts, SHADOW_SIMPLIVITY)
    assert (decision.allowed, decision.shadow, decision.reason, decision.rule) == (True, True, would_be, rule)
    assert decision.status == 200  # forwarded: the appliance answers
    assert decision.token_type == facts.token_type
    assert decision.detail  # the would-be denial keeps its explanation


def test_shadow_type_allowed_request_is_a_plain_allow() -> None:
    decision = decide(request("GET", "/api/hosts?limit=5"), token("emergency"), SHADOW_SIMPLIVITY)
    assert (decision.allowed, decision.shadow, decision.reason) == (True, False, Reason.ALLOWED)
    assert "shadow" not in decision.as_explanation()


@pytest.mark.parametrize(
    "rejection",
    [Reason.MISSING_TOKEN, Reason.MALFORMED_AUTHORIZATION, Reason.BAD_SIGNATURE, Reason.TOKEN_EXPIRED, Reason.REVOKED, Reason.IDLE_EXPIRED],
    ids=lambda r: r.code,
)
def test_shadow_never_passes_a_bad_token(rejection: Reason) -> None:
    decision = decide(request("GET", "/api/hosts?sort=name"), TokenRejection(rejection, "no"), SHADOW_SIMPLIVITY)
    assert (decision.allowed, decision.shadow, decision.reason) == (False, False, rejection)


def test_shadow_never_passes_a_type_the_pack_lacks() -> None:
    decision = decide(request("GET", "/api/hosts"), token("ghost"), SHADOW_SIMPLIVITY)
    assert (decision.allowed, decision.shadow, decision.reason) == (False, False, Reason.NO_TOKEN_TYPE)


def test_shadow_is_per_token_type() -> None:
    """Only the type that says ``shadow: true`` is shadowed; the same denial of a strict type stays a 403."""
    decision = decide(request("GET", "/api/hosts?sort=name"), token("emergency"), SIMPLIVITY)
    assert (decision.allowed, decision.shadow, decision.status) == (False, False, 403)


def test_shadow_explanation_flags_the_decision() -> None:
    decision = decide(request("GET", "/api/hosts?sort=name"), token("emergency"), SHADOW_SIMPLIVITY)
    assert decision.as_explanation() == {
        "allowed": True,
        "status": 200,
        "reason": "query_param_not_allowed",
        "rule": "simplivity/emergency/query",
        "token_type": "emergency",
        "shadow": True,
    }


SUBTREE = compile_pack(
    load_pack_text(
        """
pack: subtree
paths: case-insensitive
token_types:
  all:
    path_prefixes: [/]
    routes: [POST /V4/AccessToken/Renew]
    deny:
      - "GET /V4/AccessToken/{id}"
      - "* /V4/AccessToken/{id}/{action}/**"
      - "DELETE /Admin/**"
""",
        "subtree.yaml",
    )
)


@pytest.mark.parametrize(
    "method, target, rule",
    [
        ("GET", "/V4/AccessToken/1/a", "subtree/all/deny/* /V4/AccessToken/{id}/{action}/**"),
        ("POST", "/V4/AccessToken/1/a/b/c/d", "subtree/all/deny/* /V4/AccessToken/{id}/{action}/**"),
        ("PUT", "/v4/accesstoken/1/a/b/", "subtree/all/deny/* /V4/AccessToken/{id}/{action}/**"),
        ("DELETE", "/Admin", "subtree/all/deny/DELETE /Admin/**"),
        ("DELETE", "/admin/users/1", "subtree/all/deny/DELETE /Admin/**"),
    ],
)
def test_a_subtree_deny_rule_covers_its_path_and_everything_below(method: str, target: str, rule: str) -> None:
    decision = decide(RequestFacts(method, parse_target(target), None), TokenFacts("all", "h"), SUBTREE)
    assert (decision.allowed, decision.reason, decision.rule) == (False, Reason.OPERATION_FORBIDDEN, rule)


@pytest.mark.parametrize(
    "method, target",
    [("POST", "/V4/AccessToken/Renew"), ("GET", "/Admin/users"), ("GET", "/AdminGroup"), ("DELETE", "/Administrators/1")],
)
def test_a_subtree_deny_rule_stops_at_its_own_path_and_method(method: str, target: str) -> None:
    decision = decide(RequestFacts(method, parse_target(target), None), TokenFacts("all", "h"), SUBTREE)
    assert decision.allowed, decision


ROUTE_QUERIES = compile_pack(
    load_pack_text(
        """
pack: rq
token_types:
  emergency:
    routes:
      - GET /api/hosts
      - route: POST /api/backups/{bkpId}/restore
        query: {allow: [restore_original]}
      - route: GET /api/tasks
        query: {deny: [sort]}
    query:
      allow: [offset, limit]
""",
        "rq.yaml",
    )
)


@pytest.mark.parametrize(
    "method, target, reason, rule",
    [
        ("POST", "/api/backups/b1/restore?restore_original=true", Reason.ALLOWED, "rq/emergency/routes/POST /api/backups/{bkpId}/restore"),
        ("GET", "/api/hosts?restore_original=true", Reason.QUERY_PARAM_NOT_ALLOWED, "rq/emergency/query"),
        ("GET", "/api/hosts?offset=5", Reason.ALLOWED, "rq/emergency/routes/GET /api/hosts"),
        # The route's rule replaces the type's: paging is not a parameter of the restore call.
        ("POST", "/api/backups/b1/restore?offset=5", Reason.QUERY_PARAM_NOT_ALLOWED, "rq/emergency/query/POST /api/backups/{bkpId}/restore"),
        ("POST", "/api/backups/b1/restore?RESTORE_ORIGINAL=1", Reason.ALLOWED, "rq/emergency/routes/POST /api/backups/{bkpId}/restore"),
        # A deny-mode route rule replaces the type's allowlist on that route only.
        ("GET", "/api/tasks?state=done", Reason.ALLOWED, "rq/emergency/routes/GET /api/tasks"),
        ("GET", "/api/tasks?s%6Frt=name", Reason.QUERY_PARAM_NOT_ALLOWED, "rq/emergency/query/GET /api/tasks"),
    ],
)
def test_a_route_query_rule_replaces_the_types_on_that_route_only(method: str, target: str, reason: Reason, rule: str) -> None:
    decision = decide(request(method, target), token("emergency"), ROUTE_QUERIES)
    assert (decision.reason, decision.rule) == (reason, rule)
