"""A software WebAuthn authenticator with a browser's client side: it answers
``navigator.credentials.create()`` and ``.get()`` options with real attestation objects and real
ES256 signatures, as a platform authenticator (Touch ID, Windows Hello: self attestation,
discoverable credentials) or as a roaming security key (packed attestation with an x5c chain
from its maker's CA).

Knobs for refusal tests: ``user_verified`` (the UV flag), ``counter_step`` (a cloned
authenticator replays old counts), and ``origin`` (a phishing site).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import struct
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import cbor2
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

UP, UV, BE, BS, AT = 0x01, 0x04, 0x08, 0x10, 0x40
ES256 = -7
FIDO_AAGUID_OID = x509.ObjectIdentifier("1.3.6.1.4.1.45724.1.1.4")


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def cose_key(public: ec.EllipticCurvePublicKey) -> bytes:
    numbers = public.public_numbers()
    return cbor2.dumps({1: 2, 3: ES256, -1: 1, -2: numbers.x.to_bytes(32, "big"), -3: numbers.y.to_bytes(32, "big")})


@dataclass
class MakerCa:
    """A security-key maker's attestation CA: a root and the batch certificate keys carry."""

    root_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))
    batch_key: ec.EllipticCurvePrivateKey = field(default_factory=lambda: ec.generate_private_key(ec.SECP256R1()))

    def __post_init__(self) -> None:
        now = datetime.now(UTC)
        root_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Test Key Maker Root CA"),
                               x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Key Maker")])
        self.root = (x509.CertificateBuilder().subject_name(root_name).issuer_name(root_name)
                     .public_key(self.root_key.public_key()).serial_number(x509.random_serial_number())
                     .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=3650))
                     .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                     .sign(self.root_key, hashes.SHA256()))
        self.aaguid = uuid.uuid4()
        batch_name = x509.Name([
            x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Test Key Maker"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "Authenticator Attestation"),
            x509.NameAttribute(NameOID.COMMON_NAME, "Test Key Batch 1"),
        ])
        self.batch = (x509.CertificateBuilder().subject_name(batch_name).issuer_name(root_name)
                      .public_key(self.batch_key.public_key()).serial_number(x509.random_serial_number())
                      .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=3650))
                      .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                      # The AAGUID extension's value is a DER OCTET STRING of the 16 bytes.
                      .add_extension(x509.UnrecognizedExtension(FIDO_AAGUID_OID, b"\x04\x10" + self.aaguid.bytes),
                                     critical=False)
                      .sign(self.root_key, hashes.SHA256()))

    @property
    def root_pem(self) -> bytes:
        return self.root.public_bytes(serialization.Encoding.PEM)


@dataclass
class StoredCredential:
    credential_id: bytes
    private_key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    sign_count: int = 0


class SoftAuthenticator:
    def __init__(self, attachment: str = "platform", *, origin: str = "http://localhost:8080",
                 maker: MakerCa | None = None) -> None:
        assert attachment in ("platform", "cross-platform")
        self.attachment = attachment
        self.origin = origin
        self.maker = maker or (MakerCa() if attachment == "cross-platform" else None)
        self.aaguid = self.maker.aaguid.bytes if self.maker else b"\x00" * 16
        self.credentials: dict[bytes, StoredCredential] = {}
        self.user_verified = True
        self.counter_step = 1

    # --- navigator.credentials.create() ---------------------------------------------------------

    def create(self, options: dict[str, Any], *, credential_id: bytes | None = None) -> dict[str, Any]:
        """``credential_id`` forces the id, as a faulty or malicious authenticator could."""
        rp_id = options["rp"]["id"]
        excluded = {unb64url(c["id"]) for c in options.get("excludeCredentials", [])}
        if excluded & set(self.credentials):
            raise ValueError("InvalidStateError: this authenticator is already registered")
        key = ec.generate_private_key(ec.SECP256R1())
        credential_id = credential_id or secrets.token_bytes(32)
        stored = StoredCredential(credential_id, key, rp_id, unb64url(options["user"]["id"]))
        self.credentials[credential_id] = stored
        client_data = self._client_data("webauthn.create", options["challenge"])
        attested = self.aaguid + struct.pack(">H", len(credential_id)) + credential_id + cose_key(key.public_key())
        auth_data = self._auth_data(rp_id, AT, stored.sign_count) + attested
        statement = self._attestation(key, auth_data, client_data)
        attestation_object = cbor2.dumps({"fmt": "packed", "attStmt": statement, "authData": auth_data})
        return {
            "id": b64url(credential_id), "rawId": b64url(credential_id), "type": "public-key",
            "authenticatorAttachment": self.attachment, "clientExtensionResults": {},
            "response": {"clientDataJSON": b64url(client_data), "attestationObject": b64url(attestation_object),
                         "transports": ["internal", "hybrid"] if self.attachment == "platform" else ["usb", "nfc"]},
        }

    def _attestation(self, key: ec.EllipticCurvePrivateKey, auth_data: bytes, client_data: bytes) -> dict[str, Any]:
        signed = auth_data + hashlib.sha256(client_data).digest()
        if self.maker is None:  # self attestation: signed by the new credential's own key
            return {"alg": ES256, "sig": key.sign(signed, ec.ECDSA(hashes.SHA256()))}
        return {"alg": ES256, "sig": self.maker.batch_key.sign(signed, ec.ECDSA(hashes.SHA256())),
                "x5c": [self.maker.batch.public_bytes(serialization.Encoding.DER)]}

    # --- navigator.credentials.get() ------------------------------------------------------------

    def get(self, options: dict[str, Any], *, credential_id: bytes | None = None) -> dict[str, Any]:
        rp_id = options.get("rpId", "localhost")
        allowed = [unb64url(c["id"]) for c in options.get("allowCredentials", [])]
        candidates = [c for c in self.credentials.values() if c.rp_id == rp_id
                      and (not allowed or c.credential_id in allowed)]
        if credential_id is not None:
            candidates = [c for c in candidates if c.credential_id == credential_id]
        if not candidates:
            raise ValueError("NotAllowedError: no credential of this authenticator is allowed")
        stored = candidates[0]
        stored.sign_count = max(0, stored.sign_count + self.counter_step)
        client_data = self._client_data("webauthn.get", options["challenge"])
        auth_data = self._auth_data(rp_id, 0, stored.sign_count)
        signature = stored.private_key.sign(auth_data + hashlib.sha256(client_data).digest(),
                                            ec.ECDSA(hashes.SHA256()))
        return {
            "id": b64url(stored.credential_id), "rawId": b64url(stored.credential_id), "type": "public-key",
            "authenticatorAttachment": self.attachment, "clientExtensionResults": {},
            "response": {"clientDataJSON": b64url(client_data), "authenticatorData": b64url(auth_data),
                         "signature": b64url(signature), "userHandle": b64url(stored.user_handle)},
        }

    # --- shared ---------------------------------------------------------------------------------

    def _client_data(self, kind: str, challenge: str) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge, "origin": self.origin,
                           "crossOrigin": False}).encode()

    def _auth_data(self, rp_id: str, extra_flags: int, sign_count: int) -> bytes:
        flags = UP | extra_flags | (UV if self.user_verified else 0)
        if self.attachment == "platform":
            flags |= BE | BS  # device credentials are typically synced passkeys
        return hashlib.sha256(rp_id.encode()).digest() + bytes([flags]) + struct.pack(">I", sign_count)
