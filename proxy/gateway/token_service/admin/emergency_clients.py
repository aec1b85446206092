"""Management API: emergency clients (VCF-style), each with one bearer token shown only when it is made.

``POST /emergency-clients`` {clientId, clientName, clientDescription?,
accessTokenTtl (minutes), roles?, upstream?} -> 201 with ``accessToken``;
``GET /emergency-clients`` -> ``{"emergencyClients": [...]}`` and ``GET
/emergency-clients/{client_id}``, never with a token; ``POST
/emergency-clients/{client_id}/regenerate`` -> a new token (shown once), the
old one dead on its next request; ``DELETE /emergency-clients/{client_id}``
-> 204, its token dead and the client gone.

The token is a labgate access token for the client's upstream: subject and
client id are the ``clientId`` (VCF: "the principal for this emergency
client"), its type comes from the client's roles
(:class:`proxy.issuer.emergency_clients.EmergencyClientTypes`), it lives
``accessTokenTtl`` minutes.  The store keeps only the token's fingerprint,
which a regenerate or delete revokes.
"""

from __future__ import annotations

from dataclasses import replace

from aiohttp import web

from proxy.gateway.token_service.admin.issuing import (
    configured_upstream,
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
from proxy.issuer import directory
from proxy.issuer.access_tokens import AccessTokenGrant, MintedToken
from proxy.issuer.emergency_clients import (
    RECORD_KIND,
    EmergencyClientProblem,
    EmergencyClientRecord,
    max_ttl_minutes,
    parse_new_client,
    parse_roles,
)
from proxy.issuer.records import MalformedRecord
from proxy.reasons import Reason
from proxy.tokens.issuer_source import IssuerSourceSettings

WHAT = "emergency clients"


def register(router: AdminRouter) -> None:
    router.add("POST", "/emergency-clients", create)
    router.add("GET", "/emergency-clients", listing)
    router.add("GET", "/emergency-clients/{client_id}", show)
    router.add("POST", "/emergency-clients/{client_id}/regenerate", regenerate)
    router.add("DELETE", "/emergency-clients/{client_id}", delete)


def _offers(source: IssuerSourceSettings) -> bool:
    return source.emergency_clients is not None


async def create(call: AdminCall) -> web.StreamResponse:
    context, now = call.context, call.context.clock()
    body = dict(await call.json_body())
    upstream, source = offering_upstream(context, body.pop("upstream", None), _offers, WHAT)
    assert source.emergency_clients is not None
    try:
        token_type = source.emergency_clients.token_type_for(parse_roles(body.get("roles")))
        most = max_ttl_minutes(source.issuer, context.config.packs[upstream.pack], (token_type,))
        new = parse_new_client(body, most)
    except EmergencyClientProblem as exc:
        raise AdminError(Reason.BAD_ADMIN_REQUEST, str(exc)) from None
    if await context.store.get_record(RECORD_KIND, new.client_id, now) is not None:
        raise AdminError(Reason.ALREADY_EXISTS, f"an emergency client {new.client_id!r} exists already")
    record = EmergencyClientRecord(
        new.client_id, new.client_name, new.client_description, new.ttl_minutes, new.roles, upstream.name, token_type, now
    )
    record, token = await _with_new_token(context, record, source, now)
    if not await context.store.add_record(RECORD_KIND, record.client_id, record.to_json(), now):
        # Created meanwhile by a simultaneous request (here or on another replica): the token
        # just signed is dropped unseen, and only that request's client exists.
        raise AdminError(Reason.ALREADY_EXISTS, f"an emergency client {new.client_id!r} exists already")
    return call.answer({**record.view(source.issuer, now), "accessToken": token.token}, status=201)


async def listing(call: AdminCall) -> web.StreamResponse:
    context, now = call.context, call.context.clock()
    assert context.config.issuer is not None
    shown = [_view(key, text, context, now) for key, text in await context.store.list_records(RECORD_KIND, now)]
    return call.answer({"emergencyClients": shown})


async def show(call: AdminCall) -> web.StreamResponse:
    context, now = call.context, call.context.clock()
    client_id = call.params["client_id"]
    text = await context.store.get_record(RECORD_KIND, client_id, now)
    if text is None:
        raise AdminError(Reason.NOT_FOUND, f"no emergency client {client_id!r}")
    return call.answer(_view(client_id, text, context, now))


async def regenerate(call: AdminCall) -> web.StreamResponse:
    """A new token; the old one is revoked before the new one is stored (a failure leaves no second live token)."""
    context, now = call.context, call.context.clock()
    record = await _stored(context, call.params["client_id"], now)
    upstream, source = configured_upstream(context, record.upstream, _offers, WHAT)
    assert source.emergency_clients is not None
    token_type = source.emergency_clients.token_type_for(record.roles)
    most = max_ttl_minutes(source.issuer, context.config.packs[upstream.pack], (token_type,))
    if record.ttl_minutes > most:
        raise AdminError(
            Reason.BAD_ADMIN_REQUEST,
            f"accessTokenTtl {record.ttl_minutes} is now beyond the longest token labgate signs ({most} minutes): "
            "delete the client and create it again",
        )
    renewed, token = await _with_new_token(context, replace(record, token_type=token_type), source, now)
    await _revoke_token(context, record)
    await context.store.put_record(RECORD_KIND, renewed.client_id, renewed.to_json())
    return call.answer({**renewed.view(source.issuer, now), "accessToken": token.token})


async def delete(call: AdminCall) -> web.StreamResponse:
    context, now = call.context, call.context.clock()
    client_id = call.params["client_id"]
    text = await context.store.get_record(RECORD_KIND, client_id, now)
    if text is None:
        raise AdminError(Reason.NOT_FOUND, f"no emergency client {client_id!r}")
    try:
        await _revoke_token(context, EmergencyClientRecord.from_json(text))
    except MalformedRecord:
        # Its token cannot be named; its subject can: every token of this client issued until now dies,
        # and the answer waits out the second so that a client created again right after lives.
        await context.token_state.revoke("subject", client_id, now, None)
        await directory.revocation_settled(now, context.clock)
    await context.store.delete_record(RECORD_KIND, client_id)
    return call.no_content()


async def _with_new_token(
    context: AdminContext, record: EmergencyClientRecord, source: IssuerSourceSettings, now: float
) -> tuple[EmergencyClientRecord, MintedToken]:
    grant = AccessTokenGrant(
        record.client_id, record.client_id, record.token_type, source.audience[0], record.ttl_minutes * 60.0,
        (record.token_type,),
    )
    token = mint(await signing_key(context), context, grant, now)
    return replace(record, token_fingerprint=token.fingerprint, token_expires_at=float(token.expires_at)), token


async def _revoke_token(context: AdminContext, record: EmergencyClientRecord) -> None:
    """The client's current token dies on its next request (here at once, elsewhere within a second)."""
    if record.token_fingerprint is None:
        return
    issuer, now = context.config.issuer, context.clock()
    assert issuer is not None
    expires = record.token_expires_at if record.token_expires_at is not None else now + issuer.access_token_max_lifetime
    await context.token_state.revoke("token", record.token_fingerprint, now, expires + issuer.leeway)


async def _stored(context: AdminContext, client_id: str, now: float) -> EmergencyClientRecord:
    text = await context.store.get_record(RECORD_KIND, client_id, now)
    if text is None:
        raise AdminError(Reason.NOT_FOUND, f"no emergency client {client_id!r}")
    try:
        return EmergencyClientRecord.from_json(text)
    except MalformedRecord:
        raise AdminError(Reason.BAD_ADMIN_REQUEST, f"emergency client {client_id!r} cannot be read: delete it") from None


def _view(client_id: str, text: str, context: AdminContext, now: float) -> dict[str, object]:
    """The client as VCF shows it; an unreadable record still shows its id, with status UNKNOWN."""
    assert context.config.issuer is not None
    try:
        return EmergencyClientRecord.from_json(text).view(context.config.issuer, now)
    except MalformedRecord:
        return {"clientId": client_id, "accessTokenStatus": "UNKNOWN"}
