"""Push approvals ("JumpCloud Protect"): a mobile device holds a private key (P-256 or Ed25519)
and answers each push by signing it. Only the public key is stored.

What a device signs is fixed here, so a signature for one purpose can never be replayed for
another: each message starts with a domain tag, names its purpose and binds the server's nonce.
"""

from __future__ import annotations

import base64
import binascii

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

ES256 = "ES256"
EDDSA = "EdDSA"
ALGORITHMS = (ES256, EDDSA)
TAG = "adminlink-push-v1"
DECISIONS = ("approve", "deny")

PublicKey = ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey


class InvalidDeviceKey(ValueError):
    pass


def enrollment_message(enrollment_token: str) -> bytes:
    return f"{TAG}\nenroll\n{enrollment_token}".encode()


def decision_message(push_id: str, nonce: str, decision: str) -> bytes:
    return f"{TAG}\n{decision}\n{push_id}\n{nonce}".encode()


def inbox_message(device_id: str, timestamp: int) -> bytes:
    return f"{TAG}\ninbox\n{device_id}\n{timestamp}".encode()


def _decode(value: str) -> bytes:
    compact = value.strip()
    try:
        return base64.urlsafe_b64decode(compact + "=" * (-len(compact) % 4))
    except (binascii.Error, ValueError):
        return base64.b64decode(compact, validate=True)


def normalise_public_key(algorithm: str, encoded: str) -> str:
    """Accepts a PEM or base64 (DER SubjectPublicKeyInfo) key of the named algorithm; returns PEM."""
    if algorithm not in ALGORITHMS:
        raise InvalidDeviceKey(f"algorithm must be one of {', '.join(ALGORITHMS)}")
    try:
        if encoded.lstrip().startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(encoded.encode())
        else:
            key = serialization.load_der_public_key(_decode(encoded))
    except (ValueError, TypeError, binascii.Error) as exc:
        raise InvalidDeviceKey("public_key is not a PEM or base64 DER public key") from exc
    if algorithm == ES256 and not (isinstance(key, ec.EllipticCurvePublicKey)
                                   and isinstance(key.curve, ec.SECP256R1)):
        raise InvalidDeviceKey("an ES256 device key must be a P-256 public key")
    if algorithm == EDDSA and not isinstance(key, ed25519.Ed25519PublicKey):
        raise InvalidDeviceKey("an EdDSA device key must be an Ed25519 public key")
    pem = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return pem.decode()


def verify(algorithm: str, public_key_pem: str, signature: str, message: bytes) -> bool:
    """ES256 signatures may come DER encoded (what mobile key stores produce) or as raw r||s."""
    try:
        raw = _decode(signature)
        key = serialization.load_pem_public_key(public_key_pem.encode())
        if algorithm == EDDSA and isinstance(key, ed25519.Ed25519PublicKey):
            key.verify(raw, message)
            return True
        if algorithm == ES256 and isinstance(key, ec.EllipticCurvePublicKey):
            return any(_ecdsa_ok(key, candidate, message) for candidate in _der_candidates(raw))
    except (InvalidSignature, ValueError, TypeError, binascii.Error):
        return False
    return False


def _der_candidates(raw: bytes) -> list[bytes]:
    if len(raw) != 64:
        return [raw]
    as_raw = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    return [as_raw, raw]  # a 64-byte DER signature is rare but possible


def _ecdsa_ok(key: ec.EllipticCurvePublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError):
        return False
    return True
