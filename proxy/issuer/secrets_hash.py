"""Slow hashes for the secrets people and programs present: passwords and API client secrets.

Whoever reads the store (or the config) must not learn a secret from it, nor
guess one quickly: scrypt (RFC 7914, in the standard library) with n=2**14,
r=8, p=1 and a random 16-byte salt costs about 16 MiB and tens of
milliseconds per guess.  Encoded as ``scrypt$n$r$p$salt_b64$hash_b64`` so a
hash names its own parameters and stronger ones can come later.

Refresh tokens and access tokens are long random values: their sha256 is
enough, and is what the store keys them by.  Only secrets a person may choose,
or that must survive a store leak unguessable (client secrets), come here.

Verification runs scrypt in a worker thread (:func:`verify_secret_async`), a
bounded number at a time, so a burst of logins neither blocks the event loop
nor takes every core.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import hmac
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from proxy.errors import LabgateError

SCHEME = "scrypt"
N, R, P = 2**14, 8, 1
SALT_BYTES = 16
HASH_BYTES = 32
# What a hash from the config or the store may ask for: never weaker than the
# default, never so costly that checking one password exhausts memory.
MIN_N, MAX_N, MAX_R, MAX_P = 2**14, 2**16, 8, 4
MAX_SECRET_BYTES = 1024
CONCURRENT_VERIFICATIONS = 4


class MalformedHash(LabgateError, ValueError):
    """Not a hash this module writes; the message never quotes it."""


@dataclass(frozen=True)
class ScryptHash:
    n: int
    r: int
    p: int
    salt: bytes
    digest: bytes

    def encode(self) -> str:
        salt, digest = (base64.b64encode(x).decode("ascii") for x in (self.salt, self.digest))
        return f"{SCHEME}${self.n}${self.r}${self.p}${salt}${digest}"


def hash_secret(secret: str) -> str:
    """A fresh salted scrypt hash of ``secret``; ValueError for an empty or absurdly long one."""
    if not secret or len(secret.encode("utf-8", "surrogateescape")) > MAX_SECRET_BYTES:
        raise ValueError(f"a password or secret has 1 to {MAX_SECRET_BYTES} bytes")
    salt = os.urandom(SALT_BYTES)
    return ScryptHash(N, R, P, salt, _scrypt(secret, salt, N, R, P)).encode()


def parse_hash(encoded: str) -> ScryptHash:
    """The parts of an encoded hash; :class:`MalformedHash` when it is not one labgate accepts."""
    parts = encoded.split("$")
    if len(parts) != 6 or parts[0] != SCHEME:
        raise MalformedHash("not a scrypt$n$r$p$salt$hash value (make one with `labgate token hash-password`)")
    try:
        n, r, p = (int(x) for x in parts[1:4])
        salt, digest = (base64.b64decode(x, validate=True) for x in parts[4:6])
    except (ValueError, binascii.Error):
        raise MalformedHash("the scrypt parameters, salt or hash cannot be read") from None
    if not (MIN_N <= n <= MAX_N and n & (n - 1) == 0 and 1 <= r <= MAX_R and 1 <= p <= MAX_P):
        raise MalformedHash(f"scrypt parameters out of range (n a power of two {MIN_N}-{MAX_N}, r 1-{MAX_R}, p 1-{MAX_P})")
    if len(salt) < SALT_BYTES or len(digest) != HASH_BYTES:
        raise MalformedHash(f"a scrypt hash needs a salt of at least {SALT_BYTES} bytes and a {HASH_BYTES}-byte hash")
    return ScryptHash(n, r, p, salt, digest)


# Checked when a name is unknown, so that an unknown name costs as much time as a wrong secret.
_UNKNOWN = ScryptHash(N, R, P, b"\0" * SALT_BYTES, b"\0" * HASH_BYTES)


def verify_secret(secret: str, encoded: str | None) -> bool:
    """Whether ``secret`` matches; None (no such account) costs the same and is False.

    A malformed stored hash is False too: it can match nothing.
    """
    try:
        stored = _UNKNOWN if encoded is None else parse_hash(encoded)
    except MalformedHash:
        stored = _UNKNOWN
        encoded = None
    if len(secret.encode("utf-8", "surrogateescape")) > MAX_SECRET_BYTES:
        return False
    computed = _scrypt(secret, stored.salt, stored.n, stored.r, stored.p)
    return hmac.compare_digest(computed, stored.digest) and encoded is not None


# Threads of their own: slow hashes queue here instead of taking the default executor
# (which the sqlite store uses) or every core.
_pool = ThreadPoolExecutor(max_workers=CONCURRENT_VERIFICATIONS, thread_name_prefix="labgate-scrypt")


async def verify_secret_async(secret: str, encoded: str | None) -> bool:
    """:func:`verify_secret` in a worker thread, at most :data:`CONCURRENT_VERIFICATIONS` at once."""
    return await asyncio.get_running_loop().run_in_executor(_pool, verify_secret, secret, encoded)


async def hash_secret_async(secret: str) -> str:
    return await asyncio.get_running_loop().run_in_executor(_pool, hash_secret, secret)


def _scrypt(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        secret.encode("utf-8", "surrogateescape"), salt=salt, n=n, r=r, p=p,
        maxmem=128 * r * (n + p + 2) + 2**20, dklen=HASH_BYTES,
    )
