"""Key material for token tests: generated once per run, never shipped."""

from __future__ import annotations

import functools
import json
import time
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

HS_SECRET = b"h" * 64
ISSUER = "https://idp.test/"
AUDIENCE = "appliance"


@functools.cache
def private_key(kind: str) -> Any:
    if kind == "rsa":
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


def public_jwk(kind: str, **extra: Any) -> dict[str, Any]:
    key = private_key(kind).public_key()
    algorithm = {"rsa": jwt.algorithms.RSAAlgorithm, "p256": jwt.algorithms.ECAlgorithm, "p384": jwt.algorithms.ECAlgorithm}.get(
        kind, jwt.algorithms.OKPAlgorithm
    )
    jwk: dict[str, Any] = json.loads(algorithm.to_jwk(key))
    jwk.update(extra)
    return jwk


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    body: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "iat": now, "exp": now + 300, "role": "reader"}
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not None}


def sign(body: dict[str, Any], algorithm: str, kind: str | None = None, **headers: Any) -> str:
    key: Any = HS_SECRET if algorithm.startswith("HS") else private_key(kind or "rsa")
    return jwt.encode(body, key, algorithm=algorithm, headers=headers or None)
