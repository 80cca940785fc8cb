"""Rate limits on the sign-in endpoints: per account and per client address, the same answer
whether or not the account exists."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service import config
from service.app import create_app
from service.bootstrap import Services
from tests.conftest import Api
from tests.fakes.portal import Portal, signin_settings


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> config.Settings:
    return signin_settings(database_url, tmp_path, signin_rate_per_account="3", signin_rate_per_ip="6",
                           trust_forwarded_for="true")


async def attempt(client: TestClient, email: str, address: str, path: str = "/auth/admin/login") -> tuple[int, dict]:
    response = await client.post(path, json={"email": email, "password": "a wrong password"},
                                 headers={"X-Forwarded-For": f"198.51.100.7, {address}"})
    body = await response.json()
    if response.status == 429:
        assert int(response.headers["Retry-After"]) >= 1
    return response.status, body


async def test_attempts_on_one_account_are_limited_from_any_address(api: Api, client: TestClient) -> None:
    user = await api.user()
    for index in range(3):
        assert (await attempt(client, user["email"], f"203.0.113.{index}"))[0] == 401
    status, body = await attempt(client, user["email"].upper(), "203.0.113.50", "/auth/user/login")
    assert (status, body["error"]["code"]) == (429, "rate_limited")
    # An email that exists nowhere is limited the same way: the limit tells nothing.
    for index in range(3):
        assert (await attempt(client, "ghost@acme.test", f"203.0.113.{10 + index}"))[0] == 401
    status, ghost = await attempt(client, "ghost@acme.test", "203.0.113.60")
    assert (status, ghost) == (429, body)


async def test_attempts_from_one_address_are_limited_across_accounts(client: TestClient) -> None:
    for index in range(6):
        assert (await attempt(client, f"someone-{index}@acme.test", "192.0.2.1"))[0] == 401
    status, body = await attempt(client, "someone-new@acme.test", "192.0.2.1")
    assert (status, body["error"]["code"]) == (429, "rate_limited")
    assert (await attempt(client, "someone-new@acme.test", "192.0.2.2"))[0] == 401  # another address


async def test_factor_attempts_are_limited_per_account(api: Api, client: TestClient) -> None:
    user = await api.user()
    await api.admin_from_user(user)
    app = Portal(client, mobile=True)
    challenge = await app.challenge(user["email"])  # the first attempt on this account
    body = {"challenge_id": challenge["challenge_id"], "factor": "totp", "code": "000000"}
    assert [(await app.post("/auth/admin/login/mfa", body))[0] for _ in range(4)] == [401, 401, 401, 429]


def test_defaults_are_documented_values(tmp_path: Path) -> None:
    env = {"ADMINLINK_SECRET_KEY": "k" * 40, "ADMINLINK_DATA_DIR": str(tmp_path)}
    defaults = config.load(env)
    assert (defaults.lockout_threshold, defaults.push_ttl_seconds, defaults.session_idle_seconds) == (10, 60, 3600)
    assert (defaults.signin_rate_per_account, defaults.signin_rate_per_ip) == (20, 100)
    assert defaults.cookie_secure is True and defaults.trust_forwarded_for is False
    with pytest.raises(config.ConfigError):
        config.load({**env, "ADMINLINK_LOCKOUT_THRESHOLD": "0"})
    with pytest.raises(config.ConfigError, match="WEBAUTHN_ATTESTATION_ROOTS"):
        config.load({**env, "ADMINLINK_WEBAUTHN_ATTESTATION_ROOTS": str(tmp_path / "missing.pem")})


async def test_the_window_slides(services: Services, aiohttp_client: Any) -> None:
    # Long enough for four password checks on a loaded machine: the fourth must fall in the window.
    services.settings = dataclasses.replace(services.settings, signin_rate_window_seconds=3)
    client = await aiohttp_client(create_app(services))
    for _ in range(3):
        assert (await attempt(client, "slide@acme.test", "203.0.113.99"))[0] == 401
    status, body = await attempt(client, "slide@acme.test", "203.0.113.99")
    assert (status, body["error"]["code"]) == (429, "rate_limited")
    await asyncio.sleep(3.1)
    assert (await attempt(client, "slide@acme.test", "203.0.113.99"))[0] == 401  # counted again, not refused
