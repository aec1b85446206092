"""Management API: subjects, the people and services labgate issues tokens for.

``POST /subjects`` {name, password?} -> 201; ``GET /subjects``;
``GET /subjects/{name}``; ``DELETE /subjects/{name}`` -> 204, after which every
token of the subject and of its API clients is dead, the clients are gone, and
so is its IP allowlist as a service account.
A password is never shown back, nor its hash.
"""

from __future__ import annotations

from aiohttp import web

from proxy.gateway.token_service.admin.router import (
    AdminCall,
    AdminRouter,
    directory_errors,
    expect_fields,
)
from proxy.issuer import directory
from proxy.issuer.account_allowlists import drop_account_allowlist


def register(router: AdminRouter) -> None:
    router.add("POST", "/subjects", create)
    router.add("GET", "/subjects", listing)
    router.add("GET", "/subjects/{name}", show)
    router.add("DELETE", "/subjects/{name}", delete)


async def create(call: AdminCall) -> web.StreamResponse:
    body = await call.json_body()
    expect_fields(body, required=("name",), optional=("password",))
    with directory_errors():
        record = await directory.add_subject(call.context.store, body["name"], body.get("password"), now=call.context.clock())
    return call.answer(directory.subject_view(record), status=201)


async def listing(call: AdminCall) -> web.StreamResponse:
    records = await directory.list_subjects(call.context.store, now=call.context.clock())
    return call.answer({"subjects": [directory.subject_view(r) for r in records]})


async def show(call: AdminCall) -> web.StreamResponse:
    with directory_errors():
        record = await directory.get_subject(call.context.store, call.params["name"], now=call.context.clock())
        if record is None:
            raise directory.DirectoryError("not_found", f"no subject {call.params['name']!r}")
    return call.answer(directory.subject_view(record))


async def delete(call: AdminCall) -> web.StreamResponse:
    context = call.context
    with directory_errors():
        now = context.clock()
        await directory.delete_subject(context.store, context.token_state.revoke, call.params["name"], now=now)
    await drop_account_allowlist(context.store, call.params["name"])  # a subject made again under the name starts without it
    await directory.revocation_settled(now, context.clock)
    return call.no_content()
