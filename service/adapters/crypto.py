"""Secrets at rest: Argon2id password hashes, encrypted MFA secrets, hashed API keys."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_hasher = PasswordHasher()  # Argon2id with the library's current recommended parameters
# Verifying against this keeps the time of "no such account" equal to "wrong password".
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


def derive_key(secret_key: bytes, purpose: bytes) -> bytes:
    """A 256-bit key for one purpose, derived from the service's secret key (HKDF-SHA256): each
    use gets its own key, so no two uses can ever be played against each other."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret_key)


class SecretBox:
    """Encrypts secrets (TOTP seeds, Duo and webhook secrets) with a key derived from the
    service's secret key, so a database dump alone does not reveal them."""

    def __init__(self, secret_key: bytes) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(derive_key(secret_key, b"adminlink secret box")))

    def seal(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def open(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except InvalidToken as exc:
            raise ValueError("secret cannot be decrypted with this service's secret key") from exc


API_KEY_PREFIX = "alk_"


def new_api_key() -> tuple[str, str, str]:
    """Returns (key shown once, short prefix to recognise it, hash to store)."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return key, key[: len(API_KEY_PREFIX) + 6], token_hash(key)


def token_hash(token: str) -> str:
    # Keys carry 256 bits of randomness, so a fast hash is enough and lookups stay indexed.
    return hashlib.sha256(token.encode()).hexdigest()


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
