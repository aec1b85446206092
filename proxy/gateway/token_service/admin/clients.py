"""Management API: API clients (GreenLake-style), which log in with ``client_credentials``.

``POST /clients`` {name, subject, audience?} -> 201 with ``client_id`` and
``client_secret``, the only time the secret is shown; ``GET /clients`` and
``GET /clients/{client_id}`` never show it; ``POST
/clients/{client_id}/reset-secret`` -> a new secret, shown once, and every
token the client holds dies on its next request; ``DELETE
/clients/{client_id}`` -> 204, the same, and the client is gone.
"""

from __future__ import annotations

from aiohttp import web

from proxy.gateway.token_service.admin.router import (
    AdminCall,
    AdminError,
    AdminRouter,
    directory_errors,
    expect_fields,
)
from proxy.gateway.token_service.audiences import NoSuchAudience, select_upstream
from proxy.issuer import directory
from proxy.reasons import Reason


def register(router: AdminRouter) -> None:
    router.add("POST", "/clients", create)
    router.add("GET", "/clients", listing)
    router.add("GET", "/clients/{client_id}", show)
    router.add("POST", "/clients/{client_id}/reset-secret", reset_secret)
    router.add("DELETE", "/clients/{client_id}", delete)


async def create(call: AdminCall) -> web.StreamResponse:
    body = await call.json_body()
    expect_fields(body, required=("name", "subject"), optional=("audience",))
    audience = body.get("audience")
    if audience is not None:
        try:
            select_upstream(call.context.config, audience if isinstance(audience, str) else "")
        except NoSuchAudience as exc:
            raise AdminError(Reason.BAD_ADMIN_REQUEST, f"audience: {exc}") from None
    with directory_errors():
        record, secret = await directory.add_client(
            call.context.store, body["name"], body["subject"], audience, now=call.context.clock()
        )
    return call.answer({**directory.client_view(record), "client_secret": secret}, status=201)


async def listing(call: AdminCall) -> web.StreamResponse:
    records = await directory.list_clients(call.context.store, now=call.context.clock())
    return call.answer({"clients": [directory.client_view(r) for r in records]})


async def show(call: AdminCall) -> web.StreamResponse:
    client_id = call.params["client_id"]
    record = await directory.get_client(call.context.store, client_id, now=call.context.clock())
    if record is None:
        raise AdminError(Reason.NOT_FOUND, f"no API client {client_id!r}")
    return call.answer(directory.client_view(record))


async def reset_secret(call: AdminCall) -> web.StreamResponse:
    context = call.context
    with directory_errors():
        now = context.clock()
        record, secret = await directory.reset_client_secret(
            context.store, context.token_state.revoke, call.params["client_id"], now=now
        )
    await directory.revocation_settled(now, context.clock)
    return call.answer({**directory.client_view(record), "client_secret": secret})


async def delete(call: AdminCall) -> web.StreamResponse:
    context = call.context
    with directory_errors():
        now = context.clock()
        await directory.delete_client(context.store, context.token_state.revoke, call.params["client_id"], now=now)
    await directory.revocation_settled(now, context.clock)
    return call.no_content()
