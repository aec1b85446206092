"""Verification keys from config: each pinned to one algorithm, and refused when it cannot serve it."""

from __future__ import annotations

import pytest

from proxy.verification_keys import load_static_key
from tests.tokens.keys import certificate_pem, private_pem, public_pem


@pytest.mark.parametrize(
    "algorithm, material, message",
    [
        ("HS256", b"short", "at least 32 bytes"),
        ("HS256", b"s" * 31, "at least 32 bytes"),
        ("HS384", b"s" * 47, "at least 48 bytes"),
        ("HS512", b"s" * 48, "at least 64 bytes"),
        ("HS256", public_pem("rsa"), "not a PEM"),
        ("HS256", b"\n" + public_pem("rsa"), "not a PEM"),
        ("RS256", private_pem("rsa"), "private key"),
        ("ES256", private_pem("p256"), "private key"),
        ("RS256", certificate_pem("rsa"), "not a certificate"),
        ("RS256", public_pem("rsa1024"), "at least 2048 bits"),
        ("RS256", public_pem("p256"), "needs an RSA public key"),
        ("PS256", public_pem("ed25519"), "needs an RSA public key"),
        ("ES384", public_pem("p256"), "needs curve secp384r1"),
        ("ES256", public_pem("p384"), "needs curve secp256r1"),
        ("ES256", public_pem("rsa"), "needs an EC public key"),
        ("EdDSA", public_pem("p256"), "Ed25519"),
        ("ES256", b"garbage", "not a PEM public key"),
        ("XS256", b"x" * 64, "not supported"),
        ("none", b"x" * 64, "not supported"),
    ],
    ids=[
        "hmac_short", "hs256_31_bytes", "hs384_47_bytes", "hs512_48_bytes", "hmac_secret_is_rsa_pem",
        "hmac_secret_is_pem_after_newline", "rsa_private_key", "ec_private_key", "certificate", "rsa_1024",
        "rsa_alg_ec_key", "ps_alg_ed25519_key", "es384_on_p256", "es256_on_p384", "ec_alg_rsa_key",
        "eddsa_alg_ec_key", "garbage", "unknown_alg", "alg_none",
    ],
)
def test_static_keys_are_validated(algorithm: str, material: bytes, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_static_key(kid=None, algorithm=algorithm, material=material)


@pytest.mark.parametrize(
    "algorithm, material",
    [("HS256", b"s" * 32), ("HS512", b"s" * 64), ("RS256", public_pem("rsa")), ("ES384", public_pem("p384")), ("EdDSA", public_pem("ed25519"))],
    ids=["hs256", "hs512", "rs256", "es384", "eddsa"],
)
def test_static_keys_that_are_accepted(algorithm: str, material: bytes) -> None:
    key = load_static_key(kid="k", algorithm=algorithm, material=material)
    assert (key.kid, key.algorithm) == ("k", algorithm)
