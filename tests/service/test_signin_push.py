"""Push approvals with a device key: enrollment by a signed one-time token, a push approved and one
denied by the device's signature, one pending push per user, expiry, and forged answers."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service import config
from service.bootstrap import Services
from tests.conftest import Api, Org
from tests.fakes.portal import Portal, signin_settings
from tests.fakes.push_device import PushDevice
from tests.service.test_signin import generic_refusal, linked_admin, login_records, unfamiliar_failures, user_row

ADMIN = "/auth/admin/login"
PUSH_TTL = 3  # seconds; the default is 60, shortened so expiry can be watched


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> config.Settings:
    return signin_settings(database_url, tmp_path, push_ttl_seconds=str(PUSH_TTL),
                           signin_rate_per_account="1000", signin_rate_per_ip="1000")


async def enrolled_device(client: TestClient, user: dict[str, Any], algorithm: str = "ES256") -> PushDevice:
    app = Portal(client, mobile=True)
    await app.sign_in_with_totp(user["email"], user["totp_secret"], portal="user")
    status, enrollment = await app.post("/auth/user/mfa/push")
    assert status == 201, enrollment
    device = PushDevice(algorithm)
    await device.enroll(client, enrollment["enrollment_token"], f"{algorithm} phone")
    return device


async def push_challenge(client: TestClient, email: str) -> tuple[Portal, str, str]:
    app = Portal(client, mobile=True)
    challenge = await app.challenge(email)
    assert "push" in challenge["factors"]
    status, started = await app.post(f"{ADMIN}/mfa/start", {"challenge_id": challenge["challenge_id"],
                                                             "factor": "push"})
    assert status == 200 and started["expires_in"] <= PUSH_TTL, started
    return app, challenge["challenge_id"], started["push_id"]


async def poll(app: Portal, challenge_id: str, push_id: str) -> tuple[int, Any]:
    return await app.post(f"{ADMIN}/mfa", {"challenge_id": challenge_id, "factor": "push", "push_id": push_id})


@pytest.mark.parametrize("algorithm", ["ES256", "EdDSA"])
async def test_a_push_approved_by_the_device_key_signs_in(api: Api, services: Services, org: Org,
                                                          client: TestClient, algorithm: str) -> None:
    user, admin = await linked_admin(api)
    device = await enrolled_device(client, user, algorithm)
    app, challenge_id, push_id = await push_challenge(client, user["email"])
    status, body = await poll(app, challenge_id, push_id)
    assert (status, body["status"]) == (202, "pending")
    waiting = await device.inbox(client)
    assert waiting is not None and waiting["push_id"] == push_id and waiting["portal"] == "admin_portal"
    assert waiting["useragent"] == "test-browser/1.0"
    assert await device.answer(client, waiting, "approve") == (200, {"push_id": push_id, "decision": "approve"})
    status, body = await poll(app, challenge_id, push_id)
    assert status == 200 and body["session"]["factor"] == "push" and body["session"]["id"] == admin["id"]
    assert await device.inbox(client) is None
    records = await login_records(services, org.id, "admin_login_attempt")
    assert [(r["success"], r["mfa_meta"]["type"]) for r in records] == [(True, "push")]


async def test_a_push_denied_by_the_device_is_a_failed_factor(api: Api, services: Services, org: Org,
                                                              client: TestClient) -> None:
    user, _ = await linked_admin(api)
    device = await enrolled_device(client, user)
    app, challenge_id, push_id = await push_challenge(client, user["email"])
    waiting = await device.inbox(client)
    assert waiting is not None
    assert (await device.answer(client, waiting, "deny"))[0] == 200
    status, body = await device.answer(client, waiting, "approve")  # the first decision stands
    assert (status, body["error"]["code"]) == (409, "push_already_decided")
    assert generic_refusal(*await poll(app, challenge_id, push_id))
    # A client that never signed in: the failure counts in its unfamiliar lane, not toward the lock.
    assert await unfamiliar_failures(services, user["email"]) == 1
    assert (await user_row(services, user["id"])).failed_logins == 0
    (record,) = await login_records(services, org.id, "admin_login_attempt")
    assert (record["success"], record["error_code"], record["mfa_meta"]) == (False, "push_denied", {"type": "push"})


async def test_one_pending_push_per_user_and_pushes_expire(api: Api, client: TestClient) -> None:
    user, _ = await linked_admin(api)
    device = await enrolled_device(client, user)
    app, challenge_id, push_id = await push_challenge(client, user["email"])
    status, again = await app.post(f"{ADMIN}/mfa/start", {"challenge_id": challenge_id, "factor": "push"})
    assert again["push_id"] == push_id  # the same sign-in gets its own push back
    other = Portal(client, mobile=True)
    second = await other.challenge(user["email"])
    status, body = await other.post(f"{ADMIN}/mfa/start", {"challenge_id": second["challenge_id"],
                                                           "factor": "push"})
    assert (status, body["error"]["code"]) == (409, "push_already_pending")
    waiting = await device.inbox(client)
    assert waiting is not None
    await asyncio.sleep(PUSH_TTL + 0.3)
    status, body = await device.answer(client, waiting, "approve")
    assert (status, body["error"]["code"]) == (409, "push_expired")
    status, body = await poll(app, challenge_id, push_id)
    assert (status, body["error"]["code"]) == (401, "push_expired")
    status, fresh = await other.post(f"{ADMIN}/mfa/start", {"challenge_id": second["challenge_id"],
                                                            "factor": "push"})
    assert status == 200 and fresh["push_id"] != push_id  # the slot is free again


async def test_forged_or_foreign_answers_are_refused(api: Api, client: TestClient) -> None:
    user, _ = await linked_admin(api)
    someone_else, _ = await linked_admin(api)
    device = await enrolled_device(client, user)
    foreign = await enrolled_device(client, someone_else)
    app, challenge_id, push_id = await push_challenge(client, user["email"])
    waiting = await device.inbox(client)
    assert waiting is not None
    thief = PushDevice()
    thief.device_id, thief.organization_id = device.device_id, device.organization_id  # the id, not the key
    for impostor in (thief, foreign):
        status, body = await impostor.answer(client, waiting, "approve")
        assert (status, body["error"]["code"]) == (401, "invalid_signature")
    status, body = await device.answer(client, {**waiting, "push_id": "no-such-push"}, "approve")
    assert (status, body["error"]["code"]) == (404, "push_not_found")
    replayed = {**waiting, "nonce": "a nonce of another push"}
    status, body = await device.answer(client, replayed, "approve")
    assert (status, body["error"]["code"]) == (401, "invalid_signature")
    assert (await poll(app, challenge_id, push_id))[0] == 202  # still waiting for the real device
    assert await foreign.inbox(client) is None  # another user's device sees nothing of this push
    with pytest.raises(AssertionError, match="invalid_signature"):
        await thief.inbox(client)  # reading the push needs the device's key too


async def test_device_enrollment_is_checked(api: Api, client: TestClient) -> None:
    user, _ = await linked_admin(api)
    app = Portal(client, mobile=True)
    await app.sign_in_with_totp(user["email"], user["totp_secret"], portal="user")
    token = (await app.post("/auth/user/mfa/push"))[1]["enrollment_token"]
    device = PushDevice()
    cases = [
        ({"algorithm": "RS256"}, 400, "invalid_device_key"),
        ({"public_key": "not a key"}, 400, "invalid_device_key"),
        ({"algorithm": "EdDSA"}, 400, "invalid_device_key"),  # a P-256 key named Ed25519
        ({"signature": device.sign("something else")}, 401, "invalid_signature"),
    ]
    good = {"enrollment_token": token, "name": "phone", "algorithm": "ES256", "public_key": device.public_key_pem,
            "signature": device.sign(f"adminlink-push-v1\nenroll\n{token}")}
    for change, status, code in cases:
        got_status, got = await app.post("/auth/push/devices", {**good, **change})
        assert (got_status, got["error"]["code"]) == (status, code), change
    assert (await app.post("/auth/push/devices", good))[0] == 201
    status, body = await app.post("/auth/push/devices", good)
    assert (status, body["error"]["code"]) == (401, "invalid_enrollment_token")  # used once
    status, mine = await app.get("/auth/user/mfa")
    assert "push" in mine["factors"] and [d["name"] for d in mine["push"]] == ["phone"]
