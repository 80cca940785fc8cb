"""A mobile device playing the push ("JumpCloud Protect") app: it holds a private key (P-256 or
Ed25519), enrolls its public key with a one-time token, reads the push waiting for its user and
approves or denies it by signing exactly what the service asks it to sign."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519

TAG = "adminlink-push-v1"


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class PushDevice:
    def __init__(self, algorithm: str = "ES256") -> None:
        self.algorithm = algorithm
        self.key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey = (
            ec.generate_private_key(ec.SECP256R1()) if algorithm == "ES256" else ed25519.Ed25519PrivateKey.generate())
        self.device_id: str | None = None
        self.organization_id: str | None = None

    @property
    def public_key_pem(self) -> str:
        return self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def sign(self, message: str) -> str:
        if isinstance(self.key, ec.EllipticCurvePrivateKey):
            return b64url(self.key.sign(message.encode(), ec.ECDSA(hashes.SHA256())))
        return b64url(self.key.sign(message.encode()))

    async def enroll(self, client: TestClient, enrollment_token: str, name: str = "phone") -> dict[str, Any]:
        response = await client.post("/auth/push/devices", json={
            "enrollment_token": enrollment_token, "name": name, "algorithm": self.algorithm,
            "public_key": self.public_key_pem, "signature": self.sign(f"{TAG}\nenroll\n{enrollment_token}")})
        body = await response.json()
        assert response.status == 201, body
        self.device_id, self.organization_id = body["device_id"], body["organization_id"]
        return dict(body)

    async def pair(self, client: TestClient, payload: str, name: str = "phone") -> str:
        """Enrolls from what the pairing QR code carries (docs/portals.md); answers the server
        address it names, where a real app would send its calls (tests use ``client``)."""
        pairing = json.loads(payload)
        assert (pairing["type"], pairing["version"]) == ("adminlink-push-pairing", 1), pairing
        body = await self.enroll(client, pairing["enrollment_token"], name)
        assert body["organization_id"] == pairing["organization_id"]
        return str(pairing["server"])

    async def inbox(self, client: TestClient) -> dict[str, Any] | None:
        timestamp = int(time.time())
        response = await client.post(f"/auth/push/devices/{self.device_id}/inbox", json={
            "organization_id": self.organization_id, "timestamp": timestamp,
            "signature": self.sign(f"{TAG}\ninbox\n{self.device_id}\n{timestamp}")})
        body = await response.json()
        assert response.status == 200, body
        push: dict[str, Any] | None = body["push"]
        return push

    async def answer(self, client: TestClient, push: dict[str, Any], decision: str) -> tuple[int, Any]:
        signature = self.sign(f"{TAG}\n{decision}\n{push['push_id']}\n{push['nonce']}")
        response = await client.post(f"/auth/push/{push['push_id']}/decision", json={
            "device_id": self.device_id, "decision": decision, "signature": signature})
        return response.status, await response.json()
