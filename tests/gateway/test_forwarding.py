"""What reaches the appliance is built from what was decided: headers by kind, one credential, bodies that say nothing the query may not.

Every test here looks at what the appliance itself received: nothing, or
exactly the allowed headers and bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.conftest import (
    GatewayStarter,
    RecordingUpstream,
    RunningGateway,
    mint,
    raw_request,
)

# A pack like the demo one, with the pack-level keys this file is about.
EXTRAS_PACK = """
pack: extras
headers:
  allow: [Cookie, X-Remote-User]
public:
  - GET /api/version
bodies:
  - GET /api/search
token_types:
  reader:
    routes:
      - GET /api/hosts
      - GET /api/search
      - POST /api/backups/{bkpId}/restore
  admin:
    path_prefixes: [/api]
  office:
    routes: [GET /api/hosts]
  session:
    routes: [GET /api/hosts]
"""

STRICT_PACK = EXTRAS_PACK.replace("pack: extras", "pack: strict").replace(
    "  allow: [Cookie, X-Remote-User]", "  mode: strict\n  allow: [Accept, Content-Type, X-Vendor-Version]"
)


async def with_pack(start_gateway: GatewayStarter, tmp_path: Path, url: str, text: str, name: str, **upstream: Any) -> RunningGateway:
    (tmp_path / "policies").mkdir(exist_ok=True)
    (tmp_path / "policies" / f"{name}.yaml").write_text(text)
    return await start_gateway(url, upstream={"pack": name, **upstream})


async def send(gateway: RunningGateway, method: str, path: str, headers: dict[str, str], data: Any = None) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session:
        async with session.request(method, f"{gateway.url}/demo{path}", headers=headers, data=data) as response:
            return response.status, await response.json(content_type=None)


def bearer(role: str = "reader") -> dict[str, str]:
    return {"Authorization": f"Bearer {mint({'role': role})}"}


# -- headers, by kind -------------------------------------------------------------

# Credential, identity and client-address headers in the spellings appliance stacks read
# as the same variable (CGI/WSGI and PHP turn '_' and '.' into '-').
NEVER_FORWARDED = [
    "X_Authenticated_User", "X.Authenticated.User", "X_Forwarded_For", "X_Real_IP", "CF-Connecting-IP",
    "True-Client-IP", "Fastly-Client-IP", "X-Cluster-Client-IP", "X-Client-IP", "Proxy-Foo", "Authtoken",
    "X-Auth-Token", "X_Auth_Token", "X-Api-Key", "X-Session-Id", "Via", "X-Original-URL", "Forwarded",
    "Cookie", "X-Remote-User", "X-Forwarded-Email", "X-User-Groups",
]


async def test_credential_identity_and_address_headers_never_reach_the_appliance_in_any_spelling(
    upstream: RecordingUpstream, start_gateway: GatewayStarter
) -> None:
    gateway = await start_gateway(upstream.url)
    head = f"GET /demo/api/hosts HTTP/1.1\r\nHost: labgate.test\r\nAuthorization: Bearer {mint()}\r\n"
    head += "".join(f"{name}: 6.6.6.6\r\n" for name in NEVER_FORWARDED)
    head += "X-Vendor-Version: 1.25\r\nAccept: application/json\r\nConnection: close\r\n\r\n"
    response = await raw_request(gateway.port, head)
    assert response.status == 200, response.body
    [received] = upstream.received
    for name in NEVER_FORWARDED:
        assert name.lower() not in received.headers, name
    assert "6.6.6.6" not in json.dumps(received.headers)
    assert received.headers["x-vendor-version"] == ["1.25"]  # ordinary headers pass in standard mode
    assert received.headers["accept"] == ["application/json"]
    assert received.headers["x-forwarded-for"] == ["127.0.0.1"]  # set by labgate, once


async def test_repeated_and_varied_heads_each_get_exactly_their_own_headers_and_request_id(
    upstream: RecordingUpstream, start_gateway: GatewayStarter
) -> None:
    """A head seen before is forwarded from the list built for it; any byte changed is a head of its own."""
    token = mint()

    def head(extra: str, request_id: str | None = None) -> str:
        own_id = f"X-Request-ID: {request_id}\r\n" if request_id else ""
        return f"GET /demo/api/hosts HTTP/1.1\r\nHost: labgate.test\r\nAuthorization: Bearer {token}\r\n{own_id}{extra}\r\n"

    gateway = await start_gateway(upstream.url)
    sent = [
        (head("X-Trace: 1\r\n"), {"x-trace": ["1"]}),
        (head("X-Trace: 1\r\n"), {"x-trace": ["1"]}),  # the same head again
        (head("X-Trace: 1\r\nConnection: X-Trace\r\n"), {}),  # now named by Connection: hop-by-hop, never passed
        (head("X-Trace: 2\r\n"), {"x-trace": ["2"]}),
        (head("X-Trace: 1\r\nCookie: a=b\r\n"), {"x-trace": ["1"]}),  # a sensitive header, not listed
        (head("X-Trace: 1\r\n", "client-id-1"), {"x-trace": ["1"]}),  # the client's own sane request id
        (head("X-Trace: 1\r\n"), {"x-trace": ["1"]}),
    ]
    answered_ids = []
    for text, expected in sent:
        response = await raw_request(gateway.port, text)
        assert response.status == 200, response.body
        received = upstream.received[-1].headers
        assert {name: received.get(name, []) for name in ("x-trace", "cookie", "connection")} == {
            "x-trace": expected.get("x-trace", []), "cookie": [], "connection": []
        }
        assert received["x-forwarded-for"] == ["127.0.0.1"] and received["x-forwarded-host"] == ["labgate.test"]
        assert received["x-request-id"] == [response.headers["x-request-id"]]  # its own, once
        answered_ids.append(response.headers["x-request-id"])
    assert len(set(answered_ids)) == len(sent) and answered_ids[5] == "client-id-1"
    assert len(upstream.received) == len(sent)


async def test_a_listed_sensitive_header_passes(upstream: RecordingUpstream, start_gateway: GatewayStarter, tmp_path: Path) -> None:
    gateway = await with_pack(start_gateway, tmp_path, upstream.url, EXTRAS_PACK, "extras")
    status, _ = await send(gateway, "GET", "/api/hosts", {**bearer(), "Cookie": "lang=en", "X-Remote-User": "alice", "X_Real_IP": "6.6.6.6"})
    assert status == 200
    [received] = upstream.received
    assert received.headers["cookie"] == ["lang=en"] and received.headers["x-remote-user"] == ["alice"]
    assert "x_real_ip" not in received.headers  # reserved: no list can let it through


async def test_strict_mode_forwards_only_the_listed_headers(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, tmp_path: Path
) -> None:
    gateway = await with_pack(start_gateway, tmp_path, upstream.url, STRICT_PACK, "strict")
    headers = {**bearer(), "Accept": "application/json", "X-Vendor-Version": "1.25", "X-Custom": "dropped", "If-None-Match": "x"}
    status, _ = await send(gateway, "GET", "/api/hosts", headers)
    assert status == 200
    [received] = upstream.received
    assert received.headers["accept"] == ["application/json"] and received.headers["x-vendor-version"] == ["1.25"]
    labgates_own = {"host", "authorization", "x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-request-id"}
    assert set(received.headers) - labgates_own == {"accept", "x-vendor-version"}


async def test_an_upstream_can_switch_its_pack_to_strict_mode(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, tmp_path: Path
) -> None:
    gateway = await with_pack(
        start_gateway, tmp_path, upstream.url, EXTRAS_PACK, "extras", headers={"mode": "strict", "allow": ["X-Vendor-Version"]}
    )
    status, _ = await send(gateway, "GET", "/api/hosts", {**bearer(), "X-Vendor-Version": "2", "X-Custom": "x", "Cookie": "a=b"})
    assert status == 200
    [received] = upstream.received
    assert "x-custom" not in received.headers
    assert received.headers["x-vendor-version"] == ["2"] and received.headers["cookie"] == ["a=b"]  # the pack's list adds up


# -- one credential -----------------------------------------------------------------


async def test_the_appliances_own_token_is_re_emitted_never_copied(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url)  # a jwt source: the token is the appliance's own
    token = mint()
    head = (
        f"GET /demo/api/hosts HTTP/1.1\r\nHost: x\r\nauthorization:   bearer   {token}  \r\n"
        "Authtoken: QSDK smuggled\r\nConnection: close\r\n\r\n"
    )
    assert (await raw_request(gateway.port, head)).status == 200
    [received] = upstream.received
    assert received.headers["authorization"] == [f"Bearer {token}"]
    assert "authtoken" not in received.headers


@pytest.mark.parametrize(
    "style, sent, seen",
    [
        ("authtoken", {"Authtoken": "QSDK {t}"}, ("authtoken", "QSDK {t}")),
        ("authtoken", {"Authtoken": "{t}"}, ("authtoken", "{t}")),
        ("authtoken", {"Authtoken": "Bearer {t}"}, ("authtoken", "Bearer {t}")),
        ("authtoken", {"Authorization": "Bearer {t}"}, ("authtoken", "Bearer {t}")),
        ("opstoken", {"Authorization": "OpsToken {t}"}, ("authorization", "OpsToken {t}")),
        ("opstoken", {"Authorization": "vRealizeOpsToken {t}"}, ("authorization", "vRealizeOpsToken {t}")),
        ("opstoken", {"Authorization": "Bearer {t}"}, ("authorization", "Bearer {t}")),
    ],
    ids=["qsdk", "bare", "authtoken_bearer", "authorization_bearer", "opstoken", "vrealizeopstoken", "ops_bearer"],
)
async def test_vendor_native_token_headers(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, style: str, sent: dict[str, str], seen: tuple[str, str]
) -> None:
    gateway = await start_gateway(upstream.url, upstream={"token_header": style})
    token = mint()
    status, body = await send(gateway, "GET", "/api/hosts", {k: v.format(t=token) for k, v in sent.items()})
    assert status == 200, body
    [received] = upstream.received
    name, value = seen
    assert received.headers[name] == [value.format(t=token)]
    other = "authorization" if name == "authtoken" else "authtoken"
    assert other not in received.headers


async def test_two_different_credentials_are_refused(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url, upstream={"token_header": "authtoken"})
    status, body = await send(gateway, "GET", "/api/hosts", {"Authorization": f"Bearer {mint()}", "Authtoken": mint({"sub": "bob"})})
    assert (status, body["reason"]) == (401, "malformed_authorization")
    same = mint()
    status, _ = await send(gateway, "GET", "/api/hosts", {"Authorization": f"Bearer {same}", "Authtoken": same})
    assert status == 200
    assert len(upstream.received) == 1


async def test_labgates_credential_replaces_every_client_credential(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, tmp_path: Path
) -> None:
    (tmp_path / "appliance.token").write_text("labgates-own\n")
    gateway = await start_gateway(
        upstream.url, upstream={"token_header": "authtoken", "credential": {"type": "bearer", "token_file": "appliance.token"}}
    )
    token = mint()
    status, _ = await send(gateway, "GET", "/api/hosts", {"Authtoken": f"QSDK {token}", "X-Auth-Token": "QSDK other-session"})
    assert status == 200
    [received] = upstream.received
    assert received.headers["authorization"] == ["Bearer labgates-own"]
    assert "authtoken" not in received.headers and "x-auth-token" not in received.headers
    assert token not in json.dumps(received.headers)


async def test_a_public_route_is_forwarded_without_any_credential(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, tmp_path: Path
) -> None:
    gateway = await with_pack(start_gateway, tmp_path, upstream.url, EXTRAS_PACK, "extras")
    status, _ = await send(gateway, "GET", "/api/version", {})
    assert status == 200
    token = mint()
    status, _ = await send(gateway, "GET", "/api/version", {"Authorization": f"Bearer {token}", "Authtoken": token})
    assert status == 200
    assert [r.raw_path for r in upstream.received] == ["/api/version", "/api/version"]
    assert all("authorization" not in r.headers and "authtoken" not in r.headers for r in upstream.received)
    # Only the exact method and path are public, and without a query.
    assert (await send(gateway, "POST", "/api/version", {}))[1]["reason"] == "missing_token"
    assert (await send(gateway, "GET", "/api/version?debug=1", {}))[1]["reason"] == "query_param_not_allowed"
    assert len(upstream.received) == 2


# -- bodies and method overrides ---------------------------------------------------------


@pytest.mark.parametrize(
    "method, data, content_type",
    [
        ("GET", b"sort=name", "application/x-www-form-urlencoded"),
        ("GET", b'{"sort": "name"}', "application/json"),
        ("DELETE", b'{"force": true}', "application/json"),
        ("OPTIONS", b"x", "text/plain"),
    ],
    ids=["get_form", "get_json", "delete_json", "options"],
)
async def test_methods_without_a_body_may_not_carry_one(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, method: str, data: bytes, content_type: str
) -> None:
    gateway = await start_gateway(upstream.url)
    status, body = await send(gateway, method, "/api/hosts", {**bearer("admin"), "Content-Type": content_type}, data)
    assert (status, body["reason"], body["error"]) == (400, "body_not_allowed", "invalid_request")
    assert upstream.received == []


async def test_a_chunked_get_body_is_refused_too(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url)
    head = (
        f"GET /demo/api/hosts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {mint()}\r\nTransfer-Encoding: chunked\r\n"
        "Connection: close\r\n\r\n9\r\nsort=name\r\n0\r\n\r\n"
    )
    response = await raw_request(gateway.port, head)
    assert (response.status, response.json()["reason"]) == (400, "body_not_allowed")
    assert upstream.received == []


async def test_a_pack_may_let_one_route_take_a_body(upstream: RecordingUpstream, start_gateway: GatewayStarter, tmp_path: Path) -> None:
    gateway = await with_pack(start_gateway, tmp_path, upstream.url, EXTRAS_PACK, "extras")
    status, body = await send(gateway, "GET", "/api/search", {**bearer(), "Content-Type": "application/json"}, b'{"q": 1}')
    assert (status, body["received_bytes"]) == (200, 8)
    status, body = await send(gateway, "GET", "/api/hosts", {**bearer(), "Content-Type": "application/json"}, b'{"q": 1}')
    assert (status, body["reason"]) == (400, "body_not_allowed")
    assert [r.raw_path for r in upstream.received] == ["/api/search"]


@pytest.mark.parametrize(
    "header", ["X-HTTP-Method-Override", "X_HTTP_Method_Override", "x.http.method.override", "X-Method-Override", "X-HTTP-Method"]
)
async def test_method_override_headers_are_refused(upstream: RecordingUpstream, start_gateway: GatewayStarter, header: str) -> None:
    gateway = await start_gateway(upstream.url)
    head = (
        f"POST /demo/api/backups/b1/restore HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {mint()}\r\n{header}: DELETE\r\n"
        "Content-Length: 0\r\nConnection: close\r\n\r\n"
    )
    response = await raw_request(gateway.port, head)
    assert (response.status, response.json()["reason"]) == (400, "method_override")
    assert upstream.received == []


@pytest.mark.parametrize("query", ["_method=DELETE", "_METHOD=DELETE", "_m%65thod=DELETE", "_method[]=DELETE"])
async def test_a_method_override_in_the_query_is_refused_whatever_the_packs_query_rule(
    upstream: RecordingUpstream, start_gateway: GatewayStarter, query: str
) -> None:
    gateway = await start_gateway(upstream.url)
    # 'admin' has no query rule at all: the override is refused before any policy.
    status, body = await send(gateway, "POST", f"/api/backups/b1/restore?{query}", bearer("admin"))
    assert (status, body["reason"]) == (400, "method_override")
    assert upstream.received == []


@pytest.mark.parametrize("form", [b"name=x&_method=DELETE", b"_method=delete", b"a=1;_method=DELETE", b"%5Fmethod=DELETE", b"_Method[x]=1"])
async def test_a_method_override_in_a_form_body_is_refused(upstream: RecordingUpstream, start_gateway: GatewayStarter, form: bytes) -> None:
    gateway = await start_gateway(upstream.url)
    headers = {**bearer(), "Content-Type": "application/x-www-form-urlencoded"}
    status, body = await send(gateway, "POST", "/api/backups/b1/restore", headers, form)
    assert (status, body["reason"]) == (400, "method_override")
    assert upstream.received == []


async def test_an_ordinary_form_body_passes_byte_for_byte(upstream: RecordingUpstream, start_gateway: GatewayStarter) -> None:
    gateway = await start_gateway(upstream.url)
    headers = {**bearer(), "Content-Type": "application/x-www-form-urlencoded"}
    form = b"virtual_machine_name=new&method=restore&x_method=1"
    status, body = await send(gateway, "POST", "/api/backups/b1/restore", headers, form)
    assert (status, body["received_bytes"]) == (200, len(form))
    assert upstream.received[0].headers["content-length"] == [str(len(form))]


async def test_a_method_override_in_a_multipart_form_never_completes_at_the_appliance(
    upstream: RecordingUpstream, start_gateway: GatewayStarter
) -> None:
    gateway = await start_gateway(upstream.url)
    with_override = aiohttp.FormData()
    with_override.add_field("file", b"x" * 1000, filename="a.bin")
    with_override.add_field("_method", "DELETE")
    status, body = await send(gateway, "POST", "/api/backups/b1/restore", bearer(), with_override)
    assert (status, body["reason"]) == (400, "method_override")
    plain = aiohttp.FormData()
    plain.add_field("file", b"y" * 1000, filename="b.bin")
    plain.add_field("name", "_method")  # a value, not a field name
    status, _ = await send(gateway, "POST", "/api/backups/b1/restore", bearer(), plain)
    assert status == 200
    assert len(upstream.received) == 1  # only the plain form reached the appliance whole
