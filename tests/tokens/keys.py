"""Key material for token tests: generated once per run, never shipped."""

from __future__ import annotations

import functools
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.certificates import self_signed

HS_SECRET = b"h" * 64
ISSUER = "https://idp.test/"
AUDIENCE = "appliance"


@functools.cache
def private_key(kind: str) -> Any:
    if kind in ("rsa", "attacker_rsa"):
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "rsa1024":
        return rsa.generate_private_key(public_exponent=65537, key_size=1024)
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(kind)


def public_pem(kind: str) -> bytes:
    return private_key(kind).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def private_pem(kind: str) -> bytes:
    return private_key(kind).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def certificate_pem(kind: str) -> bytes:
    """A self-signed certificate for the key of ``kind``: what an operator might paste instead of the key."""
    return self_signed(private_key(kind), "idp.test").public_bytes(serialization.Encoding.PEM)


def public_jwk(kind: str, **extra: Any) -> dict[str, Any]:
    """The public half of a test key as a JWK, with ``extra`` members (kid, alg, use) added."""
    key = private_key(kind).public_key()
    if isinstance(key, rsa.RSAPublicKey):
        jwk = jwt.algorithms.RSAAlgorithm.to_jwk(key, as_dict=True)
    elif isinstance(key, ec.EllipticCurvePublicKey):
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(key, as_dict=True)
    else:
        jwk = jwt.algorithms.OKPAlgorithm.to_jwk(key, as_dict=True)
    return {**jwk, **extra}


def claims(**overrides: Any) -> dict[str, Any]:
    """A valid claim set for the tests' issuer and audience; an override of None drops the claim."""
    now = int(time.time())
    body: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300, "role": "reader"}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def sign(body: dict[str, Any], algorithm: str, kind: str | None = None, **headers: Any) -> str:
    """A token signed with PyJWT: HMAC with HS_SECRET, otherwise with the private key of ``kind``."""
    key: Any = HS_SECRET if algorithm.startswith("HS") else private_key(kind or "rsa")
    return jwt.encode(body, key, algorithm=algorithm, headers=headers or None)


def assert_no_token_in(detail: str, token: str) -> None:
    """A rejection's detail is shown to clients and logged: no token, nor any part of one."""
    for part in (token, *token.split(".")):
        # Shorter strings ("", "e30") occur in ordinary words; they say nothing of the token.
        assert len(part) < 8 or part not in detail, "a token or one of its segments leaked into a detail"
