"""Management API: access tokens for service accounts (Commvault-style).

``POST /service-accounts/{name}/tokens`` {tokenName, scope, apiEndpoints?,
ipAllowlist?, tokenExpiryTimestamp?, renewableUntilTimestamp?, upstream?}
-> 201 ``{"tokenInfo": {...}}`` with the access token and, for a renewable
scope, the refresh token: the only time either is shown.  ``GET
/service-accounts/{name}/tokens`` -> ``{"accessTokens": [...]}`` without
secrets; ``DELETE /service-accounts/{name}/tokens/{token_id}`` -> 204, every
access token of it dead on its next request and its refresh token unable to
renew.

A service account is a subject (``POST /subjects``): deleting the subject
kills its tokens.  Its IP allowlist (:mod:`proxy.gateway.token_service.admin.account_allowlists`)
is the account's: a token created without ``ipAllowlist`` carries the
account's list, and one with its own must stay inside it.  Each token's ``client_id`` claim is its
``accessTokenId``, which is what revoking it revokes, so a renewed token
(minted by ``POST /oauth/token`` with ``grant_type=refresh_token``, from the
refresh record that keeps its type, endpoints, IP allowlist and renew-until)
dies with the first.  Renewal follows the refresh chain's rules
(:mod:`proxy.issuer.chains`): a used refresh token presented again revokes
the whole chain.
"""

from __future__ import annotations

import dataclasses
import secrets

from aiohttp import web

from proxy.gateway.token_service.admin.issuing import (
    mint,
    offering_upstream,
    signing_key,
)
from proxy.gateway.token_service.admin.router import (
    AdminCall,
    AdminContext,
    AdminError,
    AdminRouter,
)
from proxy.issuer import chains, directory
from proxy.issuer.access_tokens import AccessTokenGrant
from proxy.issuer.account_allowlists import (
    NotWithinAllowlist,
    account_allowlist,
    token_allowlist,
)
from proxy.issuer.records import MalformedRecord, RefreshRecord
from proxy.issuer.service_accounts import (
    RECORD_KIND,
    ServiceAccountProblem,
    ServiceTokenRecord,
    parse_new_token,
    plan_token,
)
from proxy.reasons import Reason
from proxy.tokens.issuer_source import IssuerSourceSettings

WHAT = "service-account tokens"
TOKEN_ID_BYTES = 8


def register(router: AdminRouter) -> None:
    router.add("POST", "/service-accounts/{name}/tokens", create)
    router.add("GET", "/service-accounts/{name}/tokens", listing)
    router.add("DELETE", "/service-accounts/{name}/tokens/{token_id}", delete)


def _offers(source: IssuerSourceSettings) -> bool:
    return source.service_accounts is not None


async def create(call: AdminCall) -> web.StreamResponse:
    context, now = call.context, call.context.clock()
    name = await account_of(call)
    body = dict(await call.json_body())
    upstream, source = offering_upstream(context, body.pop("upstream", None), _offers, WHAT)
    scopes = source.service_accounts
    assert scopes is not None
    try:
        new = parse_new_token(body, scopes.scopes)
        new = dataclasses.replace(new, ip_allowlist=token_allowlist(new.ip_allowlist, await _account_list(call, name)))
        token_type = scopes.token_type(new.scope)
        assert token_type is not None  # parse_new_token takes offered scopes only
        plan = plan_token(new, token_type, context.config.packs[upstream.pack], source.issuer, now)
    except (ServiceAccountProblem, NotWithinAllowlist) as exc:
        raise AdminError(Reason.BAD_ADMIN_REQUEST, str(exc)) from None
    token_id = secrets.token_hex(TOKEN_ID_BYTES)
    audience = source.audience[0]
    grant = AccessTokenGrant(
        name, token_id, token_type, audience, plan.access_lifetime, (token_type,), plan.path_prefixes, plan.client_ips
    )
    key = await signing_key(context)
    chain_id = None
    if plan.renewable_until is None:
        issued = chains.IssuedTokens(mint(key, context, grant, now))
    else:
        mint(key, context, grant, now)  # what labgate would not sign is refused before a chain is stored
        chain_id = chains.new_chain_id()
        chain = RefreshRecord(
            chain_id, name, token_id, token_type, audience, upstream.name, grant.scope, plan.path_prefixes,
            plan.client_ips, now, plan.renewable_until,
        )
        issued = await chains.issue_in_chain(context.store, key, source.issuer, grant, chain, now=now)
    record = ServiceTokenRecord(
        token_id, new.name, name, upstream.name, new.scope, token_type, now, float(issued.access.expires_at),
        issued.access.fingerprint, plan.path_prefixes, plan.client_ips, plan.renewable_until, chain_id,
    )
    await context.store.put_record(RECORD_KIND, token_id, record.to_json(), expires_at=_forget_at(record, context))
    return call.answer({"tokenInfo": record.info(issued)}, status=201)


async def listing(call: AdminCall) -> web.StreamResponse:
    records = await records_of(call.context, await account_of(call), call.context.clock())
    return call.answer({"accessTokens": [r.view() for r in records]})


async def records_of(context: AdminContext, name: str, now: float) -> list[ServiceTokenRecord]:
    """The account's token records, oldest first (an unreadable one names no account it could be under)."""
    records = []
    for _, text in await context.store.list_records(RECORD_KIND, now):
        try:
            record = ServiceTokenRecord.from_json(text)
        except MalformedRecord:
            continue
        if record.subject == name:
            records.append(record)
    records.sort(key=lambda r: (r.created_at, r.token_id))
    return records


async def revoke_record(context: AdminContext, record: ServiceTokenRecord, now: float) -> None:
    """Every access token of it dead on its next request, its refresh chain unable to renew, its record gone."""
    await context.token_state.revoke("client", record.token_id, now, _forget_at(record, context))
    await context.store.delete_record(RECORD_KIND, record.token_id)


async def delete(call: AdminCall) -> web.StreamResponse:
    """Revoke the token by its id (the ``client_id`` of every access token of it) and forget it."""
    context, now = call.context, call.context.clock()
    name, token_id = await account_of(call), call.params["token_id"]
    text = await context.store.get_record(RECORD_KIND, token_id, now)
    if text is None:
        raise AdminError(Reason.NOT_FOUND, f"service account {name!r} has no access token {token_id!r}")
    try:
        record = ServiceTokenRecord.from_json(text)
    except MalformedRecord:
        await context.token_state.revoke("client", token_id, now, None)  # unreadable: revoked for good
        await context.store.delete_record(RECORD_KIND, token_id)
        return call.no_content()
    if record.subject != name:
        raise AdminError(Reason.NOT_FOUND, f"service account {name!r} has no access token {token_id!r}")
    await revoke_record(context, record, now)
    return call.no_content()


async def _account_list(call: AdminCall, name: str) -> tuple[str, ...] | None:
    try:
        return await account_allowlist(call.context.store, name, call.context.clock())
    except MalformedRecord:
        raise AdminError(Reason.STORE_UNAVAILABLE, "the account's IP allowlist cannot be read: PUT it again") from None


async def account_of(call: AdminCall) -> str:
    """The service account named in the path: a subject of the directory."""
    name = call.params["name"]
    if await directory.get_subject(call.context.store, name, now=call.context.clock()) is None:
        raise AdminError(Reason.NOT_FOUND, f"no service account {name!r}: create it as a subject first")
    return name


def _forget_at(record: ServiceTokenRecord, context: AdminContext) -> float:
    """When no token of this one can live any more: then its record and its revocation may go."""
    issuer = context.config.issuer
    assert issuer is not None
    if record.renewable_until is not None:
        return chains.chain_revocation_until(record.renewable_until, issuer)
    return record.expires_at + issuer.leeway
