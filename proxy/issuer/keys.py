"""One of labgate's signing keys: made, kept as PEM in the store, loaded, published.

Each key signs with exactly one algorithm, recorded beside it (RFC 8725
section 3.1): a token that names another algorithm for the key's ``kid`` finds
no key.  The ``kid`` is the key's RFC 7638 JWK thumbprint, so it names the
public key itself and two keys can never share one.  The private key is
PKCS#8 PEM, encrypted with the issuer's passphrase when one is configured
(``BestAvailableEncryption``); the public key is stored beside it so that
verifying and publishing never decrypt anything.
"""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from proxy.errors import LabgateError
from proxy.reasons import Reason
from proxy.store.base import SigningKeyRecord
from proxy.verification_keys import VerificationKey, load_static_key

RSA_KEY_BITS = 3072  # RS256 keys: beyond the 2048-bit minimum, good past 2030 (NIST SP 800-57)
# RFC 7638 section 3.2: the required members of each key type, and nothing else.
_THUMBPRINT_MEMBERS = {"EC": ("crv", "kty", "x", "y"), "RSA": ("e", "kty", "n")}


class SigningKeyUnusable(LabgateError):
    """A stored private key cannot be loaded (encrypted without a passphrase, wrong passphrase, damaged)."""

    reason = Reason.KEYS_UNAVAILABLE


def new_signing_key(algorithm: str, *, now: float, passphrase: bytes | None) -> SigningKeyRecord:
    """A fresh, active key for ``algorithm`` (ES256: P-256; RS256: RSA 3072)."""
    private: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey
    if algorithm == "ES256":
        private = ec.generate_private_key(ec.SECP256R1())
    elif algorithm == "RS256":
        private = rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_BITS)
    else:
        raise ValueError(f"labgate signs with ES256 or RS256, not {algorithm!r}")
    encryption: serialization.KeySerializationEncryption = (
        serialization.BestAvailableEncryption(passphrase) if passphrase else serialization.NoEncryption()
    )
    private_pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    public = private.public_key()
    return SigningKeyRecord(
        kid=jwk_thumbprint(_public_jwk_members(public)),
        algorithm=algorithm,
        created_at=now,
        public_pem=_public_pem(public).decode(),
        private_pem=private_pem.decode(),
    )


def is_encrypted(record: SigningKeyRecord) -> bool:
    return "-----BEGIN ENCRYPTED PRIVATE KEY-----" in record.private_pem


def verification_key(record: SigningKeyRecord) -> VerificationKey:
    """The public key, pinned to the record's algorithm; ValueError when it does not fit it."""
    return load_static_key(kid=record.kid, algorithm=record.algorithm, material=record.public_pem.encode())


def load_private_key(record: SigningKeyRecord, passphrase: bytes | None) -> Any:
    """The private key, checked to be the half of the record's public key.

    With a passphrase, only a key sealed with it loads: a key anyone could
    have written into the store without knowing the passphrase is not
    labgate's (see :class:`proxy.issuer.ring.KeyRing`).
    """
    encrypted = is_encrypted(record)
    if encrypted and not passphrase:
        raise SigningKeyUnusable(
            f"signing key {record.kid} is encrypted: configure issuer.key_passphrase_file or key_passphrase_env"
        )
    if passphrase and not encrypted:
        raise SigningKeyUnusable(f"signing key {record.kid} is not sealed with the issuer's passphrase")
    try:
        private = serialization.load_pem_private_key(record.private_pem.encode(), passphrase if encrypted else None)
    except (ValueError, TypeError):
        raise SigningKeyUnusable(
            f"signing key {record.kid} cannot be loaded ({'wrong passphrase or ' if encrypted else ''}damaged key)"
        ) from None
    if _public_pem(private.public_key()) != record.public_pem.encode():
        raise SigningKeyUnusable(f"signing key {record.kid}: the private key does not match its public key")
    return private


def public_jwk(record: SigningKeyRecord) -> dict[str, Any]:
    """The key as published in the JWKS (RFC 7517): public members, kid, alg and use only."""
    public = serialization.load_pem_public_key(record.public_pem.encode())
    return {**_public_jwk_members(public), "kid": record.kid, "alg": record.algorithm, "use": "sig"}


def jwk_thumbprint(members: dict[str, Any]) -> str:
    """RFC 7638: sha256 over the required members in lexical order, no whitespace, base64url."""
    required = {name: members[name] for name in _THUMBPRINT_MEMBERS[members["kty"]]}
    digest = hashlib.sha256(json.dumps(required, separators=(",", ":"), sort_keys=True).encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _public_jwk_members(public: Any) -> dict[str, Any]:
    if isinstance(public, ec.EllipticCurvePublicKey):
        members: dict[str, Any] = jwt.algorithms.ECAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, rsa.RSAPublicKey):
        members = jwt.algorithms.RSAAlgorithm.to_jwk(public, as_dict=True)
    else:
        raise ValueError("labgate's signing keys are EC or RSA keys")
    return {name: members[name] for name in _THUMBPRINT_MEMBERS[members["kty"]]}


def _public_pem(public: Any) -> bytes:
    return bytes(public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
