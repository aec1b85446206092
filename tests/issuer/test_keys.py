"""One signing key: made for its algorithm, named by its thumbprint, private half sealed, public half published."""

from __future__ import annotations

import time
from dataclasses import replace

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from proxy.issuer.keys import (
    RSA_KEY_BITS,
    SigningKeyUnusable,
    is_encrypted,
    jwk_thumbprint,
    load_private_key,
    new_signing_key,
    public_jwk,
    verification_key,
)
from tests.issuer.issuing import PASSPHRASE, PRIVATE_JWK_MEMBERS


def test_es256_keys_are_p256_and_verify_what_they_sign() -> None:
    record = new_signing_key("ES256", now=1000.0, passphrase=None)
    private = load_private_key(record, None)
    assert isinstance(private, ec.EllipticCurvePrivateKey) and private.curve.name == "secp256r1"
    assert (record.algorithm, record.created_at, record.active) == ("ES256", 1000.0, True)
    token = jwt.encode({"x": 1}, private, algorithm="ES256")
    assert jwt.decode(token, verification_key(record).key, algorithms=["ES256"]) == {"x": 1}


def test_rs256_keys_are_rsa_3072() -> None:
    record = new_signing_key("RS256", now=1000.0, passphrase=None)
    private = load_private_key(record, None)
    assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == RSA_KEY_BITS == 3072
    assert verification_key(record).algorithm == "RS256"


def test_only_es256_and_rs256_keys_are_made() -> None:
    for algorithm in ("HS256", "none", "ES384", "EdDSA"):
        with pytest.raises(ValueError, match="ES256 or RS256"):
            new_signing_key(algorithm, now=0.0, passphrase=None)


def test_the_kid_is_the_rfc7638_thumbprint() -> None:
    # RFC 7638 section 3.1, the worked example.
    example = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3o"
        "knjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHz"
        "u6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8"
        "awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(example) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    record = new_signing_key("ES256", now=0.0, passphrase=None)
    assert record.kid == jwk_thumbprint(public_jwk(record))


def test_two_keys_never_share_a_kid() -> None:
    assert len({new_signing_key("ES256", now=0.0, passphrase=None).kid for _ in range(20)}) == 20


@pytest.mark.parametrize("algorithm", ["ES256", "RS256"])
def test_the_published_jwk_has_public_members_only(algorithm: str) -> None:
    record = new_signing_key(algorithm, now=0.0, passphrase=None)
    published = public_jwk(record)
    assert not set(PRIVATE_JWK_MEMBERS) & set(published)
    assert (published["kid"], published["alg"], published["use"]) == (record.kid, algorithm, "sig")
    assert set(published) == ({"kty", "crv", "x", "y"} if algorithm == "ES256" else {"kty", "n", "e"}) | {"kid", "alg", "use"}
    # What a relying party builds from it verifies labgate's signatures.
    token = jwt.encode({"x": 1}, load_private_key(record, None), algorithm=algorithm)
    assert jwt.decode(token, jwt.PyJWK(published).key, algorithms=[algorithm]) == {"x": 1}


def test_a_passphrase_seals_the_private_key_and_only_it_opens_it() -> None:
    record = new_signing_key("ES256", now=0.0, passphrase=PASSPHRASE)
    assert is_encrypted(record) and "ENCRYPTED PRIVATE KEY" in record.private_pem
    assert load_private_key(record, PASSPHRASE) is not None
    with pytest.raises(SigningKeyUnusable, match="is encrypted: configure issuer.key_passphrase"):
        load_private_key(record, None)
    with pytest.raises(SigningKeyUnusable, match="wrong passphrase"):
        load_private_key(record, b"another passphrase entirely")
    # Verifying and publishing never need it.
    assert verification_key(record).kid == record.kid and "d" not in public_jwk(record)


def test_with_a_passphrase_an_unsealed_key_does_not_load() -> None:
    """A key written into the store by someone who does not know the passphrase is not labgate's."""
    record = new_signing_key("ES256", now=0.0, passphrase=None)
    assert not is_encrypted(record)
    assert load_private_key(record, None) is not None
    with pytest.raises(SigningKeyUnusable, match="not sealed with the issuer's passphrase"):
        load_private_key(record, PASSPHRASE)


def test_a_private_key_that_is_not_the_public_keys_half_is_refused() -> None:
    one = new_signing_key("ES256", now=0.0, passphrase=None)
    other = new_signing_key("ES256", now=0.0, passphrase=None)
    with pytest.raises(SigningKeyUnusable, match="does not match its public key"):
        load_private_key(replace(one, private_pem=other.private_pem), None)
    with pytest.raises(SigningKeyUnusable, match="damaged"):
        load_private_key(replace(one, private_pem="-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), None)


def test_a_public_key_that_does_not_fit_the_algorithm_is_refused() -> None:
    ec_key = new_signing_key("ES256", now=0.0, passphrase=None)
    with pytest.raises(ValueError, match="RS256 needs an RSA public key"):
        verification_key(replace(ec_key, algorithm="RS256"))


def test_the_private_key_never_shows_in_a_records_repr() -> None:
    record = new_signing_key("ES256", now=time.time(), passphrase=None)
    assert "PRIVATE" not in repr(record) and record.private_pem.splitlines()[1] not in repr(record)
