"""Duo through the Universal Prompt, with the ``duo-universal`` package.

The package is synchronous (``requests``); its calls run in a worker thread so a slow Duo never
stalls the event loop. It checks the id token's signature, audience, issuer, expiry, username and
nonce; whether Duo allowed the authentication is read from the token's ``auth_result``.
"""

from __future__ import annotations

import asyncio
import fnmatch
import re
import secrets
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from duo_universal.client import CLIENT_ID_LENGTH, CLIENT_SECRET_LENGTH, Client
from jwt.warnings import InsecureKeyLengthWarning

# Duo's protocol fixes the client secret at 40 characters and its tokens at HS512; PyJWT warns
# that such a key is short for SHA-512 on every call. It is Duo's design, not a setting here.
warnings.filterwarnings("ignore", category=InsecureKeyLengthWarning)

API_HOST = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?(?::\d{1,5})?$")


class DuoUnavailable(Exception):
    """Duo did not answer, or refused this application's credentials."""


class DuoRefused(Exception):
    """The Duo answer is not an approval of this user for this sign-in."""


@dataclass(frozen=True)
class DuoApplication:
    client_id: str
    client_secret: str
    api_host: str


def validate(client_id: str, client_secret: str, api_host: str, allowed_hosts: tuple[str, ...]) -> None:
    """Raises ValueError naming what is wrong with a Duo application's settings. The host must
    match one of ``allowed_hosts`` (ADMINLINK_DUO_API_HOSTS): the server connects to it."""
    if len(client_id) != CLIENT_ID_LENGTH:
        raise ValueError(f"client_id must be {CLIENT_ID_LENGTH} characters")
    if len(client_secret) != CLIENT_SECRET_LENGTH:
        raise ValueError(f"client_secret must be {CLIENT_SECRET_LENGTH} characters")
    if not API_HOST.match(api_host):
        raise ValueError("api_host must be a host name such as api-xxxxxxxx.duosecurity.com")
    if not host_allowed(api_host, allowed_hosts):
        raise ValueError(f"api_host must match {' or '.join(allowed_hosts)}")


def host_allowed(api_host: str, allowed_hosts: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(api_host, pattern) for pattern in allowed_hosts)


@dataclass(frozen=True)
class Prompt:
    url: str
    state: str
    nonce: str


class DuoGateway:
    def __init__(self, redirect_uri: str, ca_bundle: Path | None, allowed_hosts: tuple[str, ...]) -> None:
        self.redirect_uri = redirect_uri
        self.ca_bundle = ca_bundle
        self.allowed_hosts = allowed_hosts

    def validate(self, app: DuoApplication) -> None:
        validate(app.client_id, app.client_secret, app.api_host, self.allowed_hosts)

    def _client(self, app: DuoApplication) -> Client:
        if not host_allowed(app.api_host, self.allowed_hosts):
            # Saved before ADMINLINK_DUO_API_HOSTS was narrowed: never connected to.
            raise DuoUnavailable(f"the Duo API host {app.api_host} is not allowed here")
        extra: dict[str, Any] = {"duo_certs": str(self.ca_bundle)} if self.ca_bundle else {}
        return Client(app.client_id, app.client_secret, app.api_host, self.redirect_uri, **extra)

    async def check(self, app: DuoApplication) -> None:
        # Any failure of the package or of the network below it is ours to name: the answer must
        # not depend on which exception types a release of duo-universal raises.
        try:
            await asyncio.to_thread(self._client(app).health_check)
        except Exception as exc:
            raise DuoUnavailable(str(exc)) from exc

    async def prompt(self, app: DuoApplication, username: str) -> Prompt:
        """Where to send the browser; ``state`` and ``nonce`` bind Duo's answer to this sign-in."""
        await self.check(app)
        client = self._client(app)
        state, nonce = client.generate_state(), secrets.token_urlsafe(24)
        try:
            url = client.create_auth_url(username, state, nonce)
        except Exception as exc:
            raise DuoUnavailable(str(exc)) from exc
        return Prompt(url, state, nonce)

    async def confirm(self, app: DuoApplication, duo_code: str, username: str, nonce: str) -> None:
        """Exchanges Duo's code; returns only if Duo allowed ``username``."""
        client = self._client(app)
        try:
            token = await asyncio.to_thread(client.exchange_authorization_code_for_2fa_result, duo_code,
                                            username, nonce)
        except Exception as exc:
            raise DuoRefused(str(exc)) from exc
        result = token.get("auth_result") if isinstance(token, dict) else None
        if not isinstance(result, dict) or result.get("result") != "allow":
            raise DuoRefused("Duo did not allow this authentication")
