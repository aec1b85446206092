"""scrypt hashes for passwords and client secrets: salted, self-describing, compared in constant time."""

from __future__ import annotations

import base64

import pytest

from proxy.issuer.secrets_hash import (
    MalformedHash,
    hash_secret,
    hash_secret_async,
    parse_hash,
    verify_secret,
    verify_secret_async,
)


def test_a_hash_verifies_its_secret_and_nothing_else() -> None:
    encoded = hash_secret("correct horse")
    assert verify_secret("correct horse", encoded)
    assert not verify_secret("correct hors", encoded)
    assert not verify_secret("Correct horse", encoded)
    assert not verify_secret("", encoded)


def test_the_format_names_scrypt_and_its_parameters_and_never_holds_the_secret() -> None:
    encoded = hash_secret("s3cret-value")
    scheme, n, r, p, salt, digest = encoded.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt)) == 16 and len(base64.b64decode(digest)) == 32
    assert "s3cret-value" not in encoded


def test_the_same_secret_hashes_differently_every_time() -> None:
    assert hash_secret("same") != hash_secret("same")  # a fresh salt each time


def test_no_account_costs_a_check_and_is_false() -> None:
    assert verify_secret("anything", None) is False


@pytest.mark.parametrize(
    "encoded",
    [
        "",
        "plain-text-password",
        "bcrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + "A" * 44,
        "scrypt$16384$8$1$not base64$" + "A" * 44,
        "scrypt$1024$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + base64.b64encode(b"\0" * 32).decode(),  # weaker than labgate makes
        "scrypt$16385$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + base64.b64encode(b"\0" * 32).decode(),  # not a power of two
        "scrypt$1048576$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + base64.b64encode(b"\0" * 32).decode(),  # a GiB per check
        "scrypt$16384$8$1$AAAA$" + base64.b64encode(b"\0" * 32).decode(),  # short salt
        "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$AAAA",  # short hash
        "scrypt$16384$8$1$AAAAAAAAAAAAAAAAAAAAAA==$" + base64.b64encode(b"\0" * 32).decode() + "$extra",
    ],
    ids=["empty", "plain", "other-scheme", "bad-base64", "weak-n", "odd-n", "huge-n", "short-salt", "short-hash", "extra"],
)
def test_malformed_hashes_are_refused_and_match_nothing(encoded: str) -> None:
    with pytest.raises(MalformedHash) as caught:
        parse_hash(encoded)
    assert encoded not in str(caught.value) or not encoded
    assert verify_secret("", encoded) is False
    assert verify_secret("x", encoded) is False


def test_empty_and_absurdly_long_secrets_are_neither_hashed_nor_accepted() -> None:
    for secret in ("", "x" * 1025):
        with pytest.raises(ValueError):
            hash_secret(secret)
    stored = hash_secret("x" * 1024)
    assert verify_secret("x" * 1024, stored) is True
    assert verify_secret("x" * 1025, stored) is False  # refused before hashing: bounded work per attempt


async def test_async_forms_run_off_the_event_loop() -> None:
    encoded = await hash_secret_async("pw")
    assert await verify_secret_async("pw", encoded) is True
    assert await verify_secret_async("pw!", encoded) is False
