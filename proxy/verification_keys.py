"""Verification keys: what a token's signature is checked with, each pinned to one algorithm.

Every key is pinned to exactly one algorithm.  That is what makes algorithm
confusion impossible (RFC 8725 section 2.1 and 3.1): an HMAC secret is never
handed to an RSA check, and an RSA public key never becomes an HMAC secret,
whatever ``alg`` a token claims.  Keys come from config files
(:func:`load_static_key`), from a published key set (:func:`keys_from_jwk`, fetched by
:mod:`proxy.tokens.jwks`) and from labgate's own key ring (:mod:`proxy.issuer.ring`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from proxy.errors import LabgateError
from proxy.reasons import Reason

ALGORITHM_FAMILIES: Mapping[str, str] = {
    "HS256": "hmac", "HS384": "hmac", "HS512": "hmac",
    "RS256": "rsa", "RS384": "rsa", "RS512": "rsa",
    "PS256": "rsa", "PS384": "rsa", "PS512": "rsa",
    "ES256": "ec", "ES384": "ec", "ES512": "ec",
    "EdDSA": "okp",
}
# RFC 7518 section 3.2: an HMAC key at least as long as the hash output.
HMAC_MIN_BYTES = {"HS256": 32, "HS384": 48, "HS512": 64}
# RFC 7518 section 3.4: each ES algorithm has exactly one curve.
EC_CURVES = {"ES256": "secp256r1", "ES384": "secp384r1", "ES512": "secp521r1"}
RSA_MIN_BITS = 2048
JWK_KTY_FAMILY = {"RSA": "rsa", "EC": "ec", "OKP": "okp"}


@dataclass(frozen=True)
class VerificationKey:
    """A key usable for exactly one algorithm; ``key`` is what PyJWT verifies with."""

    kid: str | None
    algorithm: str
    key: Any


class KeysUnavailable(LabgateError):
    """No key set has ever been fetched: verification cannot happen (fail closed, 503)."""

    reason = Reason.KEYS_UNAVAILABLE


class KeySet(Protocol):
    """Keys looked up by kid and algorithm: a JWKS URL's (:class:`JwksCache`) or labgate's own key ring."""

    async def get(self, kid: str | None, algorithm: str) -> VerificationKey | None:
        """The key, or None; KeysUnavailable when the set could never be loaded."""
        ...

    async def close(self) -> None: ...


def load_static_key(*, kid: str | None, algorithm: str, material: bytes) -> VerificationKey:
    """A key from config; ValueError says why it cannot serve ``algorithm``."""
    family = ALGORITHM_FAMILIES.get(algorithm)
    if family is None:
        raise ValueError(f"algorithm {algorithm!r} is not supported (known: {', '.join(ALGORITHM_FAMILIES)})")
    if family == "hmac":
        return VerificationKey(kid, algorithm, _hmac_secret(algorithm, material))
    return VerificationKey(kid, algorithm, _public_key(algorithm, family, material))


def _hmac_secret(algorithm: str, material: bytes) -> bytes:
    """A shared secret at least as long as the hash (RFC 7518 section 3.2, RFC 8725 section 3.5)."""
    if material.lstrip().startswith(b"-----BEGIN") or material.startswith((b"ssh-", b"ecdsa-")):
        # The algorithm-confusion attack: a public key used as an HMAC secret.
        raise ValueError(f"{algorithm} needs a shared secret, not a PEM or SSH key")
    if len(material) < HMAC_MIN_BYTES[algorithm]:
        raise ValueError(f"{algorithm} secret must be at least {HMAC_MIN_BYTES[algorithm]} bytes (got {len(material)})")
    return material


def _public_key(algorithm: str, family: str, material: bytes) -> Any:
    """A PEM public key of the algorithm's family; a private key never belongs in labgate's config."""
    if b"-----BEGIN CERTIFICATE" in material:
        raise ValueError(f"{algorithm}: give the public key PEM, not a certificate")
    try:
        key = load_pem_public_key(material)
    except (ValueError, TypeError):
        if b"PRIVATE KEY-----" in material:
            raise ValueError(f"{algorithm}: this is a private key; give labgate only the public key") from None
        raise ValueError(f"{algorithm}: not a PEM public key") from None
    check_key_fits(algorithm, family, key)
    return key


def check_key_fits(algorithm: str, family: str, key: Any) -> None:
    """A public key must be of the algorithm's type (and curve, and size)."""
    if family == "rsa":
        if not isinstance(key, rsa.RSAPublicKey):
            raise ValueError(f"{algorithm} needs an RSA public key")
        if key.key_size < RSA_MIN_BITS:
            raise ValueError(f"{algorithm}: RSA keys must have at least {RSA_MIN_BITS} bits (got {key.key_size})")
    elif family == "ec":
        if not isinstance(key, ec.EllipticCurvePublicKey):
            raise ValueError(f"{algorithm} needs an EC public key")
        if key.curve.name != EC_CURVES[algorithm]:
            raise ValueError(f"{algorithm} needs curve {EC_CURVES[algorithm]}, not {key.curve.name}")
    elif not isinstance(key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
        raise ValueError(f"{algorithm} needs an Ed25519 or Ed448 public key")


def keys_from_jwk(jwk: Mapping[str, Any], algorithms: Sequence[str]) -> list[VerificationKey]:
    """The pinned algorithms one published key may verify; empty when it may verify none.

    Symmetric (``oct``) keys are never taken from a key set, keys for another
    use than signing are skipped, and a key's own ``alg`` must be pinned.
    """
    family = JWK_KTY_FAMILY.get(str(jwk.get("kty")))
    if family is None or jwk.get("use", "sig") != "sig":
        return []
    kid = jwk.get("kid")
    if kid is not None and not isinstance(kid, str):
        return []
    wanted = [jwk["alg"]] if "alg" in jwk else [a for a in algorithms if ALGORITHM_FAMILIES[a] == family]
    keys: list[VerificationKey] = []
    for algorithm in wanted:
        if algorithm not in algorithms or ALGORITHM_FAMILIES.get(algorithm) != family:
            continue
        try:
            key = jwt.PyJWK(dict(jwk), algorithm=algorithm).key
            check_key_fits(algorithm, family, key)
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError, KeyError):
            continue
        keys.append(VerificationKey(kid, algorithm, key))
    return keys
