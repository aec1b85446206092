"""Management API: a service account's IP allowlist (Commvault-style), which every token of it inherits.

``PUT /service-accounts/{name}/ip-allowlist`` {ipAllowlist: [...] or one entry
per line} -> 200 ``{"ipAllowlist": [...], "revokedTokens": [ids]}``: the
account's tokens whose own list is not inside the new one are revoked (they
carry their list, which the new one no longer admits).  ``GET`` -> 200
``{"ipAllowlist": [...]}`` (``[]``: the account has none, its tokens are
unrestricted unless they carry their own).  ``DELETE`` -> 204; tokens keep
the list they were issued with.  See :mod:`proxy.issuer.account_allowlists`.
"""

from __future__ import annotations

from aiohttp import web

from proxy.gateway.token_service.admin import service_accounts as tokens
from proxy.gateway.token_service.admin.router import (
    AdminCall,
    AdminError,
    AdminRouter,
    expect_fields,
)
from proxy.issuer.account_allowlists import (
    account_allowlist,
    drop_account_allowlist,
    set_account_allowlist,
    within,
)
from proxy.issuer.records import MalformedRecord
from proxy.issuer.service_accounts import (
    ServiceAccountProblem,
    check_allowlist,
    lines_of,
)
from proxy.reasons import Reason

PATH = "/service-accounts/{name}/ip-allowlist"


def register(router: AdminRouter) -> None:
    router.add("PUT", PATH, replace)
    router.add("GET", PATH, show)
    router.add("DELETE", PATH, remove)


async def replace(call: AdminCall) -> web.StreamResponse:
    context, now = call.context, call.context.clock()
    name = await tokens.account_of(call)
    body = await call.json_body()
    expect_fields(body, required=("ipAllowlist",))
    try:
        entries = lines_of(body, "ipAllowlist")
        if not entries:
            raise ServiceAccountProblem("ipAllowlist needs at least one entry (DELETE the allowlist to lift it)")
        check_allowlist(entries)
    except ServiceAccountProblem as exc:
        raise AdminError(Reason.BAD_ADMIN_REQUEST, str(exc)) from None
    revoked = []
    for record in await tokens.records_of(context, name, now):
        if record.ip_allowlist is None or not within(record.ip_allowlist, entries):
            await tokens.revoke_record(context, record, now)
            revoked.append(record.token_id)
    await set_account_allowlist(context.store, name, entries)
    return call.answer({"ipAllowlist": list(entries), "revokedTokens": revoked})


async def show(call: AdminCall) -> web.StreamResponse:
    name = await tokens.account_of(call)
    try:
        entries = await account_allowlist(call.context.store, name, call.context.clock())
    except MalformedRecord:
        raise AdminError(Reason.STORE_UNAVAILABLE, "the account's IP allowlist cannot be read: PUT it again") from None
    return call.answer({"ipAllowlist": list(entries or ())})


async def remove(call: AdminCall) -> web.StreamResponse:
    name = await tokens.account_of(call)
    if not await drop_account_allowlist(call.context.store, name):
        raise AdminError(Reason.NOT_FOUND, f"service account {name!r} has no IP allowlist")
    return call.no_content()

