"""A browser, or the admin mobile app, talking to the sign-in API; and the test settings the
sign-in tests start the service with."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyotp
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient

from service import config
from service.signin.known_devices import COOKIE_PREFIX as DEVICE_COOKIE_PREFIX
from tests.conftest import suite_settings

ORIGIN = "http://localhost:8080"
USER_PASSWORD = "a long user password 1"


def signin_settings(database_url: str, tmp_path: Path, **extra: str) -> config.Settings:
    """The suite's usual settings (see tests/conftest.py) plus sign-in settings. The delays after
    failures stay on, but short: tests assert the computed delays, never the time they take."""
    delays = {"signin_delay_base_seconds": "0.001", "signin_delay_cap_seconds": "0.004"}
    return suite_settings(database_url, tmp_path, webauthn_rp_id="localhost", webauthn_origins=ORIGIN,
                          **{**delays, **extra})


class Portal:
    """One client of the sign-in API. A browser keeps session cookies in the test client's jar; the
    mobile app sends ``client: "mobile"`` and keeps the bearer token it is given. Each Portal is
    its own device: it keeps the known-device cookies it is given to itself (``device_cookies``),
    out of the shared jar, so a Portal that never signed in is an unfamiliar client."""

    def __init__(self, client: TestClient, *, mobile: bool = False, useragent: str = "test-browser/1.0") -> None:
        self.client = client
        self.mobile = mobile
        self.useragent = useragent
        self.token: str | None = None
        self.device_cookies: dict[str, str] = {}

    def headers(self, token: str | None = None) -> dict[str, str]:
        headers = {"User-Agent": self.useragent}
        bearer = token or self.token
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        if self.device_cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.device_cookies.items())
        return headers

    def _forget_shared_device_cookies(self) -> None:
        self.client.session.cookie_jar.clear(lambda morsel: morsel.key.startswith(DEVICE_COOKIE_PREFIX))

    def _keep_device_cookies(self, response: ClientResponse) -> None:
        for name, morsel in response.cookies.items():
            if name.startswith(DEVICE_COOKIE_PREFIX):
                self.device_cookies[name] = morsel.value
        self._forget_shared_device_cookies()

    async def call(self, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
        if self.mobile and isinstance(body, dict):
            body = {"client": "mobile", **body}
        self._forget_shared_device_cookies()  # one set by a request made without a Portal
        response = await self.client.request(method, path, json=body, headers={**self.headers(), **headers})
        self._keep_device_cookies(response)
        text = await response.text()
        data = await response.json() if text and response.content_type == "application/json" else None
        if isinstance(data, dict) and "token" in data:
            self.token = data["token"]
        return response.status, data

    async def post(self, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
        return await self.call("POST", path, body if body is not None else {}, **headers)

    async def get(self, path: str) -> tuple[int, Any]:
        return await self.call("GET", path)

    async def login(self, email: str, password: str = USER_PASSWORD, *, portal: str = "admin",
                    organization_id: str | None = None) -> tuple[int, Any]:
        body: dict[str, Any] = {"email": email, "password": password}
        if organization_id:
            body["organization_id"] = organization_id
        return await self.post(f"/auth/{portal}/login", body)

    async def challenge(self, email: str, password: str = USER_PASSWORD, *, portal: str = "admin",
                        organization_id: str | None = None) -> dict[str, Any]:
        status, body = await self.login(email, password, portal=portal, organization_id=organization_id)
        assert (status, body["status"]) == (200, "mfa_required"), body
        return dict(body)

    async def totp(self, prefix: str, challenge_id: str, secret: str, code: str | None = None) -> tuple[int, Any]:
        return await self.post(f"{prefix}/mfa", {"challenge_id": challenge_id, "factor": "totp",
                                                 "code": code or pyotp.TOTP(secret).now()})

    async def sign_in_with_totp(self, email: str, secret: str, *, portal: str = "admin",
                                code: str | None = None) -> dict[str, Any]:
        challenge = await self.challenge(email, portal=portal)
        status, body = await self.totp(f"/auth/{portal}/login", challenge["challenge_id"], secret, code)
        assert status == 200 and body["status"] == "signed_in", body
        return dict(body["session"])


def next_code(secret: str) -> str:
    """The code of the next 30 s step: accepted too, and after the current one (a code once
    used is refused, and so is any older one, so a test signing in twice uses the next)."""
    return pyotp.TOTP(secret).at(time.time() + 30)


def previous_code(secret: str) -> str:
    """The code of the previous 30 s step: still inside the accepted window. Taken at least 3 s
    before the step ends, or it may be two steps old, and refused, by the time it is checked."""
    left = 30 - time.time() % 30
    if left < 3:
        time.sleep(left)
    return pyotp.TOTP(secret).at(time.time() - 30)
