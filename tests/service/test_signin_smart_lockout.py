"""Smart lockout: an attacker who knows an email cannot lock its user out from a client the user
never signed in with; the user's known device still signs in; the known-device cookie cannot be
forged, altered or moved to another identity; failures slow their answers down, up to a cap.
(A familiar client's failures still lock the user: test_signin.py.)"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pyotp
import pytest
from aiohttp.test_utils import TestClient

from service import config
from service.app import create_app
from service.bootstrap import Services
from service.signin import known_devices, smart_lockout
from service.signin.errors import RateLimited, UnfamiliarBlocked
from service.signin.flows import known_device_cookies
from service.signin.known_devices import KnownDevices
from service.signin.smart_lockout import SmartLockout, delay_after
from tests.conftest import Api, Org
from tests.fakes.portal import Portal, next_code, previous_code, signin_settings
from tests.service.test_pages import csrf_of
from tests.service.test_signin import generic_refusal, linked_admin, unfamiliar_failures, user_row
from tests.service.test_signin_openapi import documented

ADMIN = "/auth/admin/login"
WRONG = "wrong password entirely"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> config.Settings:
    # Rate limits have their own tests (test_signin_limits.py); here they stay out of the way.
    return signin_settings(database_url, tmp_path, signin_rate_per_account="1000", signin_rate_per_ip="1000")


def blocked(status: int, body: Any) -> bool:
    return status == 429 and body["error"]["code"] == "unfamiliar_client_blocked"


async def block_unfamiliar_clients(client: TestClient, email: str, threshold: int = 10) -> Portal:
    """An attacker's client, that never signed in, failing ``threshold`` times on ``email``."""
    attacker = Portal(client, mobile=True, useragent="attacker/1.0")
    for _ in range(threshold):
        assert generic_refusal(*await attacker.login(email, WRONG))
    return attacker


def subject_of(org_id: str, user: dict[str, Any]) -> str:
    return f"user:{org_id}:{user['id']}"


# --- an attacker without the cookie ---------------------------------------------------------------


async def test_an_attacker_without_the_cookie_cannot_lock_the_user_out(api: Api, services: Services, org: Org,
                                                                       client: TestClient) -> None:
    user, _ = await linked_admin(api)
    secret = user["totp_secret"]
    laptop = Portal(client, mobile=True, useragent="the user's laptop")
    await laptop.sign_in_with_totp(user["email"], secret, code=previous_code(secret))
    assert list(laptop.device_cookies) == [known_device_cookies(services.settings).cookie_name(
        subject_of(org.id, user))]

    attacker = await block_unfamiliar_clients(client, user["email"])
    for password in (WRONG, "a long user password 1"):  # the right password is not even checked: no oracle
        response = await client.post(ADMIN, json={"email": user["email"], "password": password},
                                     headers={"User-Agent": "attacker/1.0"})
        body = await response.json()
        assert blocked(response.status, body)
        documented("POST", ADMIN, 429, body)
        retry_after = int(response.headers["Retry-After"])
        assert 1 <= retry_after <= services.settings.signin_unfamiliar_block_seconds == 1800
    row = await user_row(services, user["id"])
    assert not row.account_locked and row.failed_logins == 0
    assert await unfamiliar_failures(services, user["email"]) == 10

    # The user's known device is never blocked: a typo there is a failure as before, that counts
    # toward the lock; with the right password and MFA it signs in, in both portals.
    assert generic_refusal(*await laptop.login(user["email"], WRONG))
    assert (await user_row(services, user["id"])).failed_logins == 1
    await laptop.sign_in_with_totp(user["email"], secret)
    assert (await user_row(services, user["id"])).failed_logins == 0
    await laptop.sign_in_with_totp(user["email"], secret, portal="user", code=next_code(secret))
    # A new device of the user is an unfamiliar client too, in any organization asked for.
    phone = Portal(client, mobile=True, useragent="the user's new phone")
    assert blocked(*await phone.login(user["email"], organization_id=org.id))
    assert blocked(*await attacker.login(user["email"].upper(), portal="user"))


async def test_a_browser_that_signed_in_through_the_pages_is_not_blocked_there(
        org: Org, client: TestClient, services: Services, aiohttp_client: Any) -> None:
    token = csrf_of(await (await client.get("/admin/sign-in")).text())
    await client.post("/admin/sign-in", data={"email": org.email, "password": org.password, "csrf": token})
    await client.post("/admin/sign-in/totp", data={"code": pyotp.TOTP(org.totp_secret).now(), "csrf": token})
    attacker = await aiohttp_client(create_app(services))
    await block_unfamiliar_clients(attacker, org.email)

    async def password_step(browser: TestClient) -> Any:
        csrf = csrf_of(await (await browser.get("/admin/sign-in")).text())
        return await browser.post("/admin/sign-in", data={"email": org.email, "password": org.password,
                                                          "csrf": csrf}, allow_redirects=False)

    blocked_page = await password_step(attacker)
    assert blocked_page.status == 429
    known = await password_step(client)  # this browser holds the admin's known-device cookie
    assert (known.status, known.headers["Location"]) == (303, "/admin/sign-in/verify")


async def test_the_block_is_the_same_for_an_email_that_matches_no_account(api: Api, client: TestClient) -> None:
    user, _ = await linked_admin(api)
    await block_unfamiliar_clients(client, user["email"])
    await block_unfamiliar_clients(client, "nobody-here@acme.test")
    real = await Portal(client).login(user["email"], WRONG)
    ghost = await Portal(client).login("nobody-here@acme.test", WRONG)
    assert blocked(*real) and real == ghost


async def test_a_challenge_from_an_unfamiliar_client_stops_once_the_block_starts(
        api: Api, services: Services, client: TestClient) -> None:
    """Wrong factors count in the same lane, and a challenge opened before the block ends with it."""
    user, _ = await linked_admin(api)
    thief = Portal(client, mobile=True)  # knows the password, not the second factor
    challenge = await thief.challenge(user["email"])
    for _ in range(4):
        assert generic_refusal(*await thief.totp(ADMIN, challenge["challenge_id"], "", code="000000"))
    for _ in range(6):
        assert generic_refusal(*await thief.login(user["email"], WRONG))
    assert await unfamiliar_failures(services, user["email"]) == 10
    status, body = await thief.totp(ADMIN, challenge["challenge_id"], user["totp_secret"])
    assert blocked(status, body)
    documented("POST", f"{ADMIN}/mfa", status, body)
    assert (await user_row(services, user["id"])).failed_logins == 0


async def test_a_sign_in_with_mfa_from_an_unfamiliar_client_clears_its_failures(api: Api, services: Services,
                                                                                client: TestClient) -> None:
    user, _ = await linked_admin(api)
    await block_unfamiliar_clients(client, user["email"], threshold=3)
    assert await unfamiliar_failures(services, user["email"]) == 3
    await Portal(client, mobile=True).sign_in_with_totp(user["email"], user["totp_secret"])
    assert await unfamiliar_failures(services, user["email"]) == 0


async def test_a_password_only_sign_in_makes_no_known_device(api: Api, client: TestClient) -> None:
    """A user without a factor signs in to the user portal with the password alone: no MFA, no cookie."""
    user = await api.user(mfa=False)
    browser = Portal(client)
    status, body = await browser.login(user["email"], portal="user")
    assert (status, body["session"]["factor"]) == (200, "password")
    assert browser.device_cookies == {}


# --- the cookie cannot be forged, altered or moved ------------------------------------------------


async def test_the_cookie_is_refused_when_forged_tampered_expired_or_for_another_identity(
        api: Api, services: Services, org: Org, client: TestClient) -> None:
    user, _ = await linked_admin(api)
    other = await api.user()
    devices = known_device_cookies(services.settings)
    name = devices.cookie_name(subject_of(org.id, user))
    laptop = Portal(client, mobile=True)
    await laptop.sign_in_with_totp(user["email"], user["totp_secret"], code=previous_code(user["totp_secret"]))
    genuine = laptop.device_cookies[name]
    await block_unfamiliar_clients(client, user["email"])

    issued, _, signature = genuine.partition(".")
    forger = KnownDevices(b"another service's secret key, not ours" * 2, devices.lifetime)
    days_91 = 91 * 86400
    refused = {
        "tampered signature": f"{issued}.{signature[:-2]}{'AA' if signature[-2:] != 'AA' else 'BB'}",
        "tampered time": f"{int(issued) + 1}.{signature}",
        "forged with another key": forger.issue(subject_of(org.id, user))[1],
        "another identity's": devices.issue(subject_of(org.id, other))[1],
        "expired": devices.issue(subject_of(org.id, user), now=time.time() - days_91)[1],
        "garbage": "not-a-time.not-a-signature",
    }
    for case, value in refused.items():
        fake = Portal(client, mobile=True)
        fake.device_cookies = {name: value}
        assert blocked(*await fake.login(user["email"])), case
    fake = Portal(client, mobile=True)
    fake.device_cookies = {devices.cookie_name(subject_of(org.id, other)): genuine}  # moved to another name
    assert blocked(*await fake.login(user["email"]))
    laptop.device_cookies = {name: genuine}
    await laptop.sign_in_with_totp(user["email"], user["totp_secret"])


def test_a_cookie_is_bound_to_its_identity_and_key() -> None:
    devices = KnownDevices(b"k" * 40, 3600)
    name, value = devices.issue("user:org-1:alice", now=1_000_000)
    assert name.startswith("adminlink_device_") and name != devices.cookie_name("user:org-1:bob")
    assert devices.recognises({name: value}, "user:org-1:alice", now=1_000_100)
    assert not devices.recognises({name: value}, "user:org-1:alice", now=1_000_000 + 3600)  # its lifetime is over
    assert not devices.recognises({devices.cookie_name("user:org-2:alice"): value}, "user:org-2:alice",
                                  now=1_000_100)
    assert not KnownDevices(b"j" * 40, 3600).recognises({name: value}, "user:org-1:alice", now=1_000_100)
    for garbage in ("", ".", "1000000", "1000000.", "\u00e91000000." + value[8:], "-5." + value[8:]):
        assert not devices.recognises({name: garbage}, "user:org-1:alice", now=1_000_100), garbage
    assert known_devices.device_cookies({"adminlink_session": "s", name: value, "other": "x"}) == ((name, value),)


# --- delays --------------------------------------------------------------------------------------


def test_the_delay_doubles_with_each_failure_up_to_the_cap() -> None:
    assert [delay_after(n, 0.25, 8.0) for n in range(9)] == [0, 0.25, 0.5, 1, 2, 4, 8, 8, 8]
    assert delay_after(10_000, 0.25, 8.0) == 8.0  # no overflow however long the attack
    assert delay_after(5, 0, 8.0) == 0  # base 0 turns the delays off


async def test_an_attempt_before_the_delay_is_over_is_refused_with_retry_after(services: Services) -> None:
    smart = SmartLockout(services.redis, threshold=3, block_seconds=600, delay_base=5.0, delay_cap=20.0)
    lane = smart_lockout.unfamiliar("Someone@Acme.test ")
    assert [await smart.count(lane) for _ in range(2)] == [5.0, 10.0]  # what the answers wait
    with pytest.raises(RateLimited) as early:
        await smart.ensure_open(smart_lockout.unfamiliar("someone@acme.test"))  # the same lane
    assert early.value.code == "rate_limited" and 5 <= early.value.retry_after <= 10
    assert await smart.count(lane) == 20.0  # the third failure: capped, and the threshold is reached
    with pytest.raises(UnfamiliarBlocked) as block:
        await smart.ensure_open(lane)
    assert block.value.code == "unfamiliar_client_blocked" and 590 <= block.value.retry_after <= 600
    familiar = smart_lockout.familiar("user:org-1:someone")
    await smart.count(familiar)
    await smart.count(familiar)
    await smart.count(familiar)
    with pytest.raises(RateLimited) as paced:  # a familiar lane is paced, never blocked
        await smart.ensure_open(familiar)
    assert not isinstance(paced.value, UnfamiliarBlocked)
    await smart.clear(lane)
    await smart.ensure_open(lane)  # a completed sign-in opens the lane again


async def test_failed_answers_are_held_back_by_the_computed_delay(api: Api, services: Services,
                                                                  client: TestClient,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """What each failed answer waits for (recorded, not timed), and that the waits are bounded."""
    waits: list[float] = []
    real_hold_back = smart_lockout.hold_back

    async def recording(delay: float) -> None:
        waits.append(delay)
        await real_hold_back(delay)

    monkeypatch.setattr(smart_lockout, "hold_back", recording)
    user, _ = await linked_admin(api)
    for _ in range(5):
        assert generic_refusal(*await Portal(client).login(user["email"], WRONG))
    assert waits == [0.001, 0.002, 0.004, 0.004, 0.004]  # signin_settings: base 1 ms, cap 4 ms
    monkeypatch.setattr(smart_lockout, "MAX_WAITING", 0)  # as if many answers were already waiting
    await asyncio.wait_for(real_hold_back(600), timeout=30)  # goes out at once instead


def test_delay_settings(tmp_path: Path) -> None:
    env = {"ADMINLINK_SECRET_KEY": "k" * 40, "ADMINLINK_DATA_DIR": str(tmp_path)}
    defaults = config.load(env)
    assert (defaults.signin_delay_base_seconds, defaults.signin_delay_cap_seconds) == (0.25, 8.0)
    assert (defaults.signin_unfamiliar_block_seconds, defaults.known_device_days) == (1800, 90)
    for name, value in (("SIGNIN_DELAY_BASE_SECONDS", "-1"), ("SIGNIN_DELAY_CAP_SECONDS", "61"),
                        ("SIGNIN_DELAY_CAP_SECONDS", "soon"), ("SIGNIN_UNFAMILIAR_BLOCK_SECONDS", "0"),
                        ("KNOWN_DEVICE_DAYS", "0")):
        with pytest.raises(config.ConfigError, match=name):
            config.load({**env, f"ADMINLINK_{name}": value})



async def test_a_lane_cleared_while_a_failure_is_counted_is_never_kept_forever(services: Services) -> None:
    """A completed sign-in may clear the lane while a parallel failure is being counted: whatever
    is left of the lane still expires."""
    smart = SmartLockout(services.redis, threshold=3, block_seconds=600, delay_base=5.0, delay_cap=20.0)
    lane = smart_lockout.unfamiliar("racing@acme.test")
    await asyncio.gather(smart.count(lane), smart.clear(lane))
    assert await services.redis.ttl(SmartLockout._key(lane)) != -1  # -2: gone; else: expires
