"""Password hashing with scrypt (a memory-hard standard KDF), a salt per user, constant-time compare."""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

# 2^14 x 8 x 1 costs ~16 MiB and ~50 ms per check: slow for guessing, fine for a login.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MIN_PASSWORD_LENGTH = 8


def hash_password(password: str) -> str:
    """`scrypt$n$r$p$salt$digest` with a fresh 16-byte salt; the password itself is never kept."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"password must have at least {MIN_PASSWORD_LENGTH} characters")
    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    b64 = base64.b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        expected = base64.b64decode(digest)
        got = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected)
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, expected)


# Checked against when the user name is unknown, so a wrong name costs the same time as a wrong
# password and response times do not reveal which names exist.
DUMMY_HASH = hash_password("not-a-real-password")
