"""A local Duo server speaking the protocol ``duo-universal`` uses (OIDC-style, over HTTPS):

- ``POST /oauth/v1/health_check`` with a client-assertion JWT (HS512, the client secret);
- ``GET /oauth/v1/authorize`` with a signed request JWT; the user's answer is scripted
  (``decisions``), and the browser is redirected to the application with ``state`` and
  ``duo_code``;
- ``POST /oauth/v1/token`` exchanging the code (once) for an id token (HS512) carrying
  ``preferred_username``, the ``nonce`` and ``auth_result``.

It serves TLS on loopback with a certificate from its own CA, whose PEM file the client trusts.
"""

from __future__ import annotations

import secrets
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import jwt
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def _tls_files(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a server certificate for 127.0.0.1 that it signed: (ca, cert, key) paths."""
    now = datetime.now(UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Local Duo Test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(days=1))
          .not_valid_after(now + timedelta(days=30))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False, data_encipherment=False,
                                       key_agreement=False, encipher_only=False, decipher_only=False),
                         critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(IPv4Address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    paths = directory / "duo-ca.pem", directory / "duo-cert.pem", directory / "duo-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return paths


@dataclass
class Grant:
    client_id: str
    username: str
    redirect_uri: str
    nonce: str | None
    result: str
    used: bool = False


@dataclass
class FakeDuo:
    directory: Path
    applications: dict[str, str] = field(default_factory=dict)  # client_id -> client_secret
    decisions: dict[str, str] = field(default_factory=dict)  # username -> allow | deny
    grants: dict[str, Grant] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self.ca_path, cert, key = _tls_files(self.directory)
        self._ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._ssl.load_cert_chain(cert, key)
        self._runner: web.AppRunner | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def new_application(self) -> tuple[str, str]:
        client_id = "DI" + secrets.token_hex(9).upper()
        secret = secrets.token_urlsafe(30)[:40]
        self.applications[client_id] = secret
        return client_id, secret

    async def start(self) -> None:
        app = web.Application()
        app.add_routes([web.post("/oauth/v1/health_check", self.health_check),
                        web.get("/oauth/v1/authorize", self.authorize),
                        web.post("/oauth/v1/token", self.token)])
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self._ssl)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _assertion(self, token: str, client_id: str, endpoint: str) -> bool:
        secret = self.applications.get(client_id)
        if secret is None:
            return False
        try:
            claims = jwt.decode(token, secret, algorithms=["HS512"], audience=f"https://{self.host}{endpoint}")
        except jwt.PyJWTError:
            return False
        return bool(claims.get("iss") == claims.get("sub") == client_id and claims.get("jti"))

    async def health_check(self, request: web.Request) -> web.Response:
        self.calls.append("health_check")
        form = await request.post()
        if not self._assertion(str(form.get("client_assertion", "")), str(form.get("client_id", "")),
                               "/oauth/v1/health_check"):
            return web.json_response({"stat": "FAIL", "code": 40002, "message": "invalid client"}, status=400)
        return web.json_response({"stat": "OK", "response": {"timestamp": int(time.time())}})

    async def authorize(self, request: web.Request) -> web.Response:
        """The Universal Prompt: here the scripted user answers at once."""
        self.calls.append("authorize")
        client_id = request.query.get("client_id", "")
        secret = self.applications.get(client_id)
        try:
            claims = jwt.decode(request.query.get("request", ""), secret or "", algorithms=["HS512"],
                                audience=f"https://{self.host}")
        except jwt.PyJWTError:
            return web.json_response({"error": "invalid_request"}, status=400)
        if secret is None or claims.get("client_id") != client_id or claims.get("response_type") != "code":
            return web.json_response({"error": "unauthorized_client"}, status=400)
        username = claims["duo_uname"]
        code = secrets.token_urlsafe(24)
        self.grants[code] = Grant(client_id, username, claims["redirect_uri"], request.query.get("nonce"),
                                  self.decisions.get(username, "allow"))
        location = claims["redirect_uri"] + "?" + urlencode({"state": claims["state"], "duo_code": code})
        raise web.HTTPFound(location)

    async def token(self, request: web.Request) -> web.Response:
        self.calls.append("token")
        query = request.query
        client_id, code = query.get("client_id", ""), query.get("code", "")
        if not self._assertion(query.get("client_assertion", ""), client_id, "/oauth/v1/token"):
            return web.json_response({"error": "invalid_client"}, status=400)
        grant = self.grants.get(code)
        if (grant is None or grant.used or grant.client_id != client_id
                or grant.redirect_uri != query.get("redirect_uri")
                or query.get("grant_type") != "authorization_code"):
            return web.json_response({"error": "invalid_grant", "error_description": "bad code"}, status=400)
        grant.used = True
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": f"https://{self.host}/oauth/v1/token", "aud": client_id, "sub": grant.username,
            "preferred_username": grant.username, "iat": now, "exp": now + 300, "auth_time": now,
            "auth_result": {"result": grant.result, "status": grant.result,
                            "status_msg": "Login Successful" if grant.result == "allow" else "Login denied"},
        }
        if grant.nonce:
            claims["nonce"] = grant.nonce
        id_token = jwt.encode(claims, self.applications[client_id], algorithm="HS512")
        return web.json_response({"id_token": id_token, "access_token": secrets.token_urlsafe(16),
                                  "token_type": "Bearer", "expires_in": 3600})
