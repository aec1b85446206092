"""A mock HPE GreenLake (SSO token endpoint and Compute Ops Management API), faithful to what clients see.

What it mirrors (HPE GreenLake access-token blog post, the HPE GreenLake Compute Ops Management API reference):

* ``POST /as/token.oauth2``: form ``grant_type=client_credentials`` with
  ``client_id`` and ``client_secret`` in the body or as HTTP Basic; answers
  ``{"access_token": <JWT>, "token_type": "Bearer", "expires_in": 7199}``.
  No refresh token: a client asks again.
* the access token is an RS256 JWT with a ``kid``; claims ``client_id``,
  ``iss`` (``https://sso.common.cloud.hpe.com``, a constructor parameter since
  the mock runs on loopback), ``aud`` ``external_api``, ``sub`` (the owner's
  email), ``user_ctx``, ``auth_source``, ``platform_customer_id``,
  ``application_instance_id``, ``iat`` and ``exp`` (``iat`` + 7200).
* the public keys as a JWKS; :meth:`GreenLakeAppliance.rotate_key` signs with a
  new key from then on, and drops the old one from the JWKS unless told to
  keep it.
* API client credentials: :meth:`~GreenLakeAppliance.create_client`;
  resetting the secret or deleting the credential invalidates every token
  issued to it, and deleting a user invalidates its tokens and clients.
* ``GET /compute-ops-mgmt/v1/servers`` (and ``/{id}``), with ``offset``,
  ``limit``, ``filter`` (:mod:`proxy.mocks.odata`) and ``select``, answering
  ``{"offset", "count", "total", "items"}``; the older ``/compute-ops/v1beta2``
  prefix of the vendor document's example too (both configurable).  Errors carry the
  GreenLake body ``{"httpStatusCode", "errorCode", "message", "debugId",
  "errorDetails"}``.

In reality the token endpoint (``sso.common.cloud.hpe.com``) and the API
(``<region>.api.greenlake.hpe.com``) are two hosts; the mock serves both from
one application.  Not in the sources, chosen here: the JWKS path ``/pf/JWKS``
and the discovery document (the token endpoint is PingFederate's, and these are
PingFederate's paths); ``auth_source: "cca"``; the ``errorCode`` values
(``HPE_GL_ERROR_BAD_REQUEST``, ``HPE_GL_ERROR_UNAUTHORIZED``,
``HPE_GL_ERROR_NOT_FOUND``) and ``errorDetails`` entries; the token endpoint's
error descriptions; a page size of at most 1000 (the default too).
"""

from __future__ import annotations

import base64
import binascii
import secrets
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric import rsa

from proxy.mocks.odata import FilterError, Predicate, parse_filter, property_paths
from proxy.mocks.recording import bearer_of, recording_middleware

DEFAULT_ISSUER = "https://sso.common.cloud.hpe.com"
AUDIENCE = "external_api"
TOKEN_LIFETIME = 7200  # "will expire after 120 minutes"
EXPIRES_IN = 7199  # what the token endpoint says
DEFAULT_PREFIXES = ("/compute-ops-mgmt/v1", "/compute-ops/v1beta2")
PAGE_LIMIT = 1000
JWKS_PATH = "/pf/JWKS"
FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class ApiCredential:
    """What GreenLake shows once when credentials are created or reset."""

    client_id: str
    client_secret: str


@dataclass
class _Client:
    client_id: str
    secret: str
    owner: str
    application_instance_id: str
    user_ctx: str


@dataclass
class _SigningKey:
    kid: str
    private: rsa.RSAPrivateKey
    public_jwk: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def generate(cls) -> _SigningKey:
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        kid = secrets.token_hex(8)
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
        return cls(kid, private, {**jwk, "kid": kid, "use": "sig", "alg": "RS256"})


class GreenLakeAppliance:
    """The mock's state; ``app()`` builds the aiohttp application serving it."""

    def __init__(
        self,
        *,
        issuer: str = DEFAULT_ISSUER,
        audience: str = AUDIENCE,
        prefixes: tuple[str, ...] = DEFAULT_PREFIXES,
        keep_old_keys: bool = False,
        platform_customer_id: str = "8fa3d2c09a8e11ec9d61a6b0f5a3a1c2",
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.prefixes = prefixes
        self.keep_old_keys = keep_old_keys
        self.platform_customer_id = platform_customer_id
        self.clock = clock
        self.keys: list[_SigningKey] = [_SigningKey.generate()]  # the last one signs
        self.clients: dict[str, _Client] = {}
        self.live_tokens: dict[str, str] = {}  # token -> client id; dropped on reset or delete
        self.received: list[tuple[str, str]] = []  # (method, raw path with query) of every request
        self.servers = [_server(serial) for serial in ("MXQ1140XVX", "MXQ1140XVY", "CZ2D1C0L8K")]
        self._known_properties = property_paths(_item(self.servers[0], "/compute-ops-mgmt/v1"))

    def app(self) -> web.Application:
        app = web.Application(middlewares=[recording_middleware(self.received)])
        app.router.add_post("/as/token.oauth2", self._token)
        app.router.add_get(JWKS_PATH, self._jwks)
        app.router.add_get("/.well-known/openid-configuration", self._discovery)
        for prefix in self.prefixes:
            app.router.add_get(f"{prefix}/servers", self._servers(prefix))
            app.router.add_get(f"{prefix}/servers/{{id}}", self._server(prefix))
        return app

    # -- administration (the GreenLake console's Manage > API page) ---------------

    @property
    def kid(self) -> str:
        """The kid new tokens are signed with."""
        return self.keys[-1].kid

    def create_client(self, owner: str = "ops@lab.example", application_instance_id: str | None = None) -> ApiCredential:
        client = _Client(str(uuid.uuid4()), secrets.token_hex(16), owner,
                         application_instance_id or str(uuid.uuid4()), secrets.token_hex(16))
        self.clients[client.client_id] = client
        return ApiCredential(client.client_id, client.secret)

    def reset_secret(self, client_id: str) -> ApiCredential:
        """A new secret; every token of the client dies ("Resetting the client secret will invalidate all tokens")."""
        client = self.clients[client_id]
        client.secret = secrets.token_hex(16)
        self._drop_tokens({client_id})
        return ApiCredential(client_id, client.secret)

    def delete_client(self, client_id: str) -> None:
        del self.clients[client_id]
        self._drop_tokens({client_id})

    def delete_user(self, owner: str) -> None:
        """The user's clients and all their tokens go with the user."""
        gone = {c.client_id for c in self.clients.values() if c.owner == owner}
        for client_id in gone:
            del self.clients[client_id]
        self._drop_tokens(gone)

    def rotate_key(self, *, keep_old: bool | None = None) -> str:
        """Sign with a new key from now on; returns its kid.  The old keys stay published only if kept."""
        keep = self.keep_old_keys if keep_old is None else keep_old
        new = _SigningKey.generate()
        self.keys = [*self.keys, new] if keep else [new]
        return new.kid

    def _drop_tokens(self, client_ids: set[str]) -> None:
        self.live_tokens = {t: c for t, c in self.live_tokens.items() if c not in client_ids}

    # -- the SSO token endpoint and keys ------------------------------------------

    async def _token(self, request: web.Request) -> web.Response:
        if request.content_type != FORM:
            return _oauth_error(400, "invalid_request", "Invalid content type")
        form = {k: v for k, v in (await request.post()).items() if isinstance(v, str)}
        basic = _basic_credentials(request.headers.get("Authorization"))
        if basic is not None and ("client_id" in form or "client_secret" in form):
            return _oauth_error(400, "invalid_request", "Multiple client authentication methods")
        client_id, secret = basic if basic is not None else (form.get("client_id", ""), form.get("client_secret", ""))
        client = self.clients.get(client_id)
        if client is None or not secrets.compare_digest(client.secret.encode(), secret.encode()):
            headers = {"WWW-Authenticate": 'Basic realm="PingFederate"'} if basic is not None else None
            return _oauth_error(401, "invalid_client", "Invalid client or Invalid client credentials", headers)
        grant = form.get("grant_type")
        if not grant:
            return _oauth_error(400, "invalid_request", "Missing grant_type")
        if grant != "client_credentials":
            return _oauth_error(400, "unsupported_grant_type", "Unsupported grant type")
        token = self._mint(client)
        self.live_tokens[token] = client.client_id
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": EXPIRES_IN},
                                 headers={"Cache-Control": "no-store", "Pragma": "no-cache"})

    def _mint(self, client: _Client) -> str:
        now = int(self.clock())
        claims = {
            "client_id": client.client_id,
            "iss": self.issuer,
            "aud": self.audience,
            "sub": client.owner,
            "user_ctx": client.user_ctx,
            "auth_source": "cca",
            "platform_customer_id": self.platform_customer_id,
            "iat": now,
            "application_instance_id": client.application_instance_id,
            "exp": now + TOKEN_LIFETIME,
        }
        key = self.keys[-1]
        return jwt.encode(claims, key.private, algorithm="RS256", headers={"kid": key.kid})

    async def _jwks(self, request: web.Request) -> web.Response:
        return web.json_response({"keys": [k.public_jwk for k in self.keys]})

    async def _discovery(self, request: web.Request) -> web.Response:
        base = f"{request.scheme}://{request.host}"
        return web.json_response({
            "issuer": self.issuer,
            "token_endpoint": f"{base}/as/token.oauth2",
            "jwks_uri": f"{base}{JWKS_PATH}",
            "grant_types_supported": ["client_credentials"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "id_token_signing_alg_values_supported": ["RS256"],
        })

    # -- Compute Ops Management -----------------------------------------------------

    def _authorized(self, request: web.Request) -> web.Response | None:
        """None when the bearer token is one this GreenLake issued and still honours."""
        token = bearer_of(request)
        if token is None:
            return _api_error(401, "HPE_GL_ERROR_UNAUTHORIZED", "Missing or invalid authorization header")
        try:
            kid = jwt.get_unverified_header(token).get("kid")
            key = next((k for k in self.keys if k.kid == kid), None)
            if key is None:
                raise jwt.InvalidTokenError("unknown kid")
            claims = jwt.decode(token, key.private.public_key(), algorithms=["RS256"], audience=self.audience,
                                issuer=self.issuer, options={"verify_exp": False, "verify_iat": False, "verify_nbf": False,
                                         "require": ["exp", "iat"]})  # times by self.clock
        except jwt.InvalidTokenError:
            return _api_error(401, "HPE_GL_ERROR_UNAUTHORIZED", "Invalid access token")
        if self.clock() >= claims["exp"]:
            return _api_error(401, "HPE_GL_ERROR_UNAUTHORIZED", "Access token expired")
        if token not in self.live_tokens:
            return _api_error(401, "HPE_GL_ERROR_UNAUTHORIZED", "Access token revoked")
        return None

    def _servers(self, prefix: str) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            refused = self._authorized(request)
            if refused is not None:
                return refused
            try:
                offset = _query_int(request.query, "offset", 0, 0, None)
                limit = _query_int(request.query, "limit", PAGE_LIMIT, 1, PAGE_LIMIT)
                items = [_item(s, prefix) for s in self.servers]
                if "filter" in request.query:
                    keep = _filter(request.query["filter"], self._known_properties)
                    items = [i for i in items if keep(i)]
                selected = _selection(request.query.get("select"), items[0] if items else _item(self.servers[0], prefix))
            except _BadQuery as exc:
                return _api_error(400, "HPE_GL_ERROR_BAD_REQUEST", str(exc), issue=(exc.subject, str(exc)))
            page = items[offset : offset + limit]
            if selected is not None:
                page = [{k: v for k, v in i.items() if k in selected} for i in page]
            return web.json_response({"offset": offset, "count": len(page), "total": len(items), "items": page})

        return handler

    def _server(self, prefix: str) -> Callable[[web.Request], Any]:
        async def handler(request: web.Request) -> web.Response:
            refused = self._authorized(request)
            if refused is not None:
                return refused
            found = next((s for s in self.servers if s["id"] == request.match_info["id"]), None)
            if found is None:
                return _api_error(404, "HPE_GL_ERROR_NOT_FOUND", "Server not found")
            return web.json_response(_item(found, prefix))

        return handler


class _BadQuery(ValueError):
    def __init__(self, subject: str, message: str) -> None:
        super().__init__(message)
        self.subject = subject


def _query_int(query: Mapping[str, str], name: str, default: int, minimum: int, maximum: int | None) -> int:
    if name not in query:
        return default
    text = query[name]
    if not text.isdigit() or int(text) < minimum or (maximum is not None and int(text) > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise _BadQuery(name, f"{name} must be an integer {bounds}")
    return int(text)


def _filter(text: str, known: set[tuple[str, ...]]) -> Predicate:
    try:
        return parse_filter(text, known)
    except FilterError as exc:
        raise _BadQuery("filter", f"invalid filter: {exc}") from None


def _selection(select: str | None, sample: Mapping[str, Any]) -> set[str] | None:
    if select is None:
        return None
    names = {n.strip() for n in select.split(",")}
    unknown = sorted(n for n in names if n not in sample)
    if unknown or not names:
        raise _BadQuery("select", f"unknown property in select: {', '.join(unknown)[:100]}")
    return names


def _oauth_error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": error, "error_description": description}, status=status,
                             headers={"Cache-Control": "no-store", **(headers or {})})


def _api_error(status: int, code: str, message: str, *, issue: tuple[str, str] | None = None) -> web.Response:
    details: list[dict[str, Any]] = []
    if issue is not None:
        details.append({"type": "hpe.greenlake.bad_request",
                        "issues": [{"source": "query", "subject": issue[0], "description": issue[1]}]})
    body = {"httpStatusCode": status, "errorCode": code, "message": message, "debugId": str(uuid.uuid4()),
            "errorDetails": details}
    return web.json_response(body, status=status)


def _basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    scheme, _, value = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(value.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return ("", "")
    return (user, password) if sep else ("", "")


def _server(serial: str) -> dict[str, Any]:
    managed = serial != "CZ2D1C0L8K"
    return {
        "id": f"P07595-B21+{serial}",
        "name": serial,
        "platformFamily": "PROLIANT",
        "createdAt": "2022-09-15T18:46:21.488619+00:00",
        "updatedAt": "2022-09-15T18:46:21.488619+00:00",
        "generation": 1,
        "hardware": {
            "serialNumber": serial,
            "model": "ProLiant DL360 Gen10 Plus",
            "productId": "P07595-B21",
            "powerState": "ON" if managed else "OFF",
            "health": {"summary": "OK"},
        },
        "state": {
            "managed": managed,
            "connected": managed,
            "connectedModifiedAt": None,
            "subscriptionState": "SUBSCRIBED" if managed else "REQUIRED",
            "subscriptionTier": "ENHANCED" if managed else None,
            "subscriptionExpiresAt": None,
        },
    }


def _item(server: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    """A server as listed under ``prefix``: its type and resourceUri name the API it came from."""
    area = prefix.strip("/").split("/")[0]
    return {"id": server["id"], "type": f"{area}/server", "resourceUri": f"{prefix}/servers/{server['id']}",
            **{k: v for k, v in server.items() if k != "id"}}

