"""The management API's router: whole-segment templates, one handler per method and path."""

from __future__ import annotations

import pytest
from aiohttp import web

from proxy.gateway.token_service.admin.router import AdminCall, AdminError, AdminRouter
from proxy.reasons import Reason


async def handler(call: AdminCall) -> web.StreamResponse:
    return web.Response()


async def other(call: AdminCall) -> web.StreamResponse:
    return web.Response()


def router() -> AdminRouter:
    routes = AdminRouter()
    routes.add("GET", "/clients", handler)
    routes.add("GET", "/clients/{client_id}", other)
    routes.add("POST", "/clients/{client_id}/reset-secret", handler)
    return routes


def test_parameters_are_whole_segments() -> None:
    found, params = router().resolve("GET", ("clients", "5f0c-aa.b@c+d_e"))
    assert found is other and params == {"client_id": "5f0c-aa.b@c+d_e"}
    assert router().resolve("POST", ("clients", "x", "reset-secret"))[1] == {"client_id": "x"}


@pytest.mark.parametrize(
    "segments",
    [("clients", "a b"), ("clients", ".."), ("clients", ""), ("clients", "x" * 129), ("clients", "x", "y"), ("clientsx",), ()],
    ids=["space", "dots", "empty", "long", "deeper", "longer-literal", "root"],
)
def test_what_no_template_matches_is_not_found(segments: tuple[str, ...]) -> None:
    with pytest.raises(AdminError) as caught:
        router().resolve("GET", segments)
    assert caught.value.reason is Reason.NOT_FOUND


def test_another_method_on_a_known_path_is_405() -> None:
    with pytest.raises(AdminError) as caught:
        router().resolve("DELETE", ("clients", "x"))
    assert caught.value.reason is Reason.ADMIN_METHOD_NOT_ALLOWED


@pytest.mark.parametrize("template", ["/clients/{id}x", "/clients/a b", "/clients/{Id}"], ids=["partial", "space", "upper"])
def test_templates_that_are_not_whole_segments_are_refused(template: str) -> None:
    with pytest.raises(ValueError, match="neither a name nor a whole"):
        AdminRouter().add("GET", template, handler)


def test_a_route_registered_twice_is_refused() -> None:
    routes = router()
    with pytest.raises(ValueError, match="registered twice"):
        routes.add("GET", "/clients/{other_name}", handler)
