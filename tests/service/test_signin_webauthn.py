"""WebAuthn for real: registration and assertion ceremonies with a software authenticator that
produces real attestation objects and ES256 signatures, as a device (platform) authenticator and
as a roaming security key; passwordless Go and its one way into the admin portal."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pyotp
import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.asymmetric import ec

from service import config
from service.adapters import orm
from service.bootstrap import Services
from tests.conftest import Api, Org
from tests.fakes.portal import ORIGIN, Portal, signin_settings
from tests.fakes.webauthn_authenticator import MakerCa, SoftAuthenticator, b64url
from tests.service.test_signin import admin_portal_rows, generic_refusal, linked_admin, login_records, user_row

TRUSTED_MAKER = MakerCa()
ADMIN = "/auth/admin/login"
STEP_UP = "/auth/user/launch-admin-portal"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> config.Settings:
    roots = tmp_path / "attestation-roots.pem"
    roots.write_bytes(TRUSTED_MAKER.root_pem)
    return signin_settings(database_url, tmp_path, webauthn_attestation_roots=str(roots),
                           signin_rate_per_account="1000", signin_rate_per_ip="1000")


def security_key() -> SoftAuthenticator:
    return SoftAuthenticator("cross-platform", maker=TRUSTED_MAKER)


async def register(app: Portal, authenticator: SoftAuthenticator, kind: str, name: str = "") -> tuple[int, Any]:
    status, body = await app.post("/auth/user/mfa/webauthn/options", {"type": kind})
    assert status == 200, body
    assert body["options"]["authenticatorSelection"]["userVerification"] == "required"
    credential = authenticator.create(body["options"])
    return await app.post("/auth/user/mfa/webauthn", {"credential": credential, "name": name})


async def user_portal(client: TestClient, user: dict[str, Any]) -> Portal:
    app = Portal(client, mobile=True)
    await app.sign_in_with_totp(user["email"], user["totp_secret"], portal="user")
    return app


async def with_factor(app: Portal, prefix: str, challenge_id: str, factor: str,
                      authenticator: SoftAuthenticator) -> tuple[int, Any]:
    status, started = await app.post(f"{prefix}/mfa/start", {"challenge_id": challenge_id, "factor": factor})
    assert status == 200, started
    assert started["options"]["userVerification"] == "required"
    credential = authenticator.get(started["options"])
    return await app.post(f"{prefix}/mfa", {"challenge_id": challenge_id, "factor": factor, "credential": credential})


async def credential_count(services: Services, user_id: str) -> int:
    async with services.session_factory() as session:
        return int(await session.scalar(sa.select(sa.func.count()).select_from(orm.webauthn_credentials).where(
            orm.webauthn_credentials.c.user_id == user_id)) or 0)


async def test_device_authenticators_and_security_keys_are_told_apart(api: Api, services: Services, org: Org,
                                                                      client: TestClient) -> None:
    user, _ = await linked_admin(api)
    app = await user_portal(client, user)
    laptop, key = SoftAuthenticator("platform"), security_key()
    status, device = await register(app, laptop, "webauthn_device", "MacBook Touch ID")
    assert status == 201 and device["type"] == "webauthn_device"
    status, roaming = await register(app, key, "security_key")
    assert status == 201 and roaming["aaguid"] == str(TRUSTED_MAKER.aaguid)
    status, mine = await app.get("/auth/user/mfa")
    assert mine["factors"] == ["totp", "webauthn_device", "security_key"]
    assert [(k["type"], k["name"]) for k in mine["webauthn"]] == [("webauthn_device", "MacBook Touch ID"),
                                                                  ("security_key", "security key")]
    shown = await api.ok("GET", f"/api/v1/users/{user['id']}")
    assert shown["mfa"]["factors"] == ["totp", "webauthn_device", "security_key"]

    admin_app = Portal(client, mobile=True)
    challenge = await admin_app.challenge(user["email"])
    assert challenge["factors"] == ["totp", "webauthn_device", "security_key"]
    status, started = await admin_app.post(f"{ADMIN}/mfa/start", {"challenge_id": challenge["challenge_id"],
                                                                  "factor": "security_key"})
    assert [c["id"] for c in started["options"]["allowCredentials"]] == [b64url(cid) for cid in key.credentials]
    # The laptop's credential does not count as a security key.
    credential = laptop.get({**started["options"], "allowCredentials": []})
    status, body = await admin_app.post(f"{ADMIN}/mfa", {"challenge_id": challenge["challenge_id"],
                                                         "factor": "security_key", "credential": credential})
    assert generic_refusal(status, body)
    status, body = await with_factor(admin_app, ADMIN, challenge["challenge_id"], "security_key", key)
    assert status == 200 and body["session"]["factor"] == "security_key"
    challenge = await admin_app.challenge(user["email"])
    status, body = await with_factor(admin_app, ADMIN, challenge["challenge_id"], "webauthn_device", laptop)
    assert status == 200 and body["session"]["factor"] == "webauthn_device"
    factors = [r["mfa_meta"]["type"] for r in await login_records(services, org.id, "admin_login_attempt")
               if r["success"]]
    assert factors == ["security_key", "webauthn_device"]


async def test_registrations_that_do_not_verify_are_refused(api: Api, services: Services,
                                                            client: TestClient) -> None:
    user, _ = await linked_admin(api)
    app = await user_portal(client, user)
    unverified = SoftAuthenticator("platform")
    unverified.user_verified = False
    phishing = SoftAuthenticator("platform", origin="https://login.adminlink.example.evil")
    untrusted_key = SoftAuthenticator("cross-platform")  # a maker this service does not trust
    for authenticator, kind in [(SoftAuthenticator("platform"), "security_key"),  # a laptop posing as a key
                                (security_key(), "webauthn_device"), (unverified, "webauthn_device"),
                                (phishing, "webauthn_device"), (untrusted_key, "security_key")]:
        status, body = await register(app, authenticator, kind)
        assert (status, body["error"]["code"]) == (400, "webauthn_registration_failed"), (kind, body)
    status, body = await app.post("/auth/user/mfa/webauthn", {"credential": {"id": "x"}})
    assert (status, body["error"]["code"]) == (400, "enrollment_not_started")
    status, body = await app.post("/auth/user/mfa/webauthn/options", {"type": "fingerprint"})
    assert (status, body["error"]["code"]) == (400, "invalid_field")
    assert await credential_count(services, user["id"]) == 0
    key = security_key()
    assert (await register(app, key, "security_key"))[0] == 201
    with pytest.raises(ValueError, match="already registered"):  # excludeCredentials names it
        await register(app, key, "security_key")
    status, body = await app.post("/auth/user/mfa/webauthn/options", {"type": "security_key"})
    (registered_id,) = key.credentials  # an authenticator that ignores excludeCredentials, reusing its id
    again = security_key().create({**body["options"], "excludeCredentials": []}, credential_id=registered_id)
    status, body = await app.post("/auth/user/mfa/webauthn", {"credential": again})
    assert (status, body["error"]["code"]) == (409, "credential_already_registered")
    assert await credential_count(services, user["id"]) == 1


async def test_assertions_that_do_not_verify_are_refused(api: Api, services: Services, org: Org,
                                                         client: TestClient) -> None:
    user, _ = await linked_admin(api)
    app = await user_portal(client, user)
    key = security_key()
    assert (await register(app, key, "security_key"))[0] == 201
    admin_app = Portal(client, mobile=True)
    challenge = (await admin_app.challenge(user["email"]))["challenge_id"]
    status, body = await admin_app.post(f"{ADMIN}/mfa", {"challenge_id": challenge, "factor": "security_key",
                                                         "credential": key.get({"challenge": "AAAA"})})
    assert (status, body["error"]["code"]) == (400, "factor_not_started")  # no options were asked for
    assert (await with_factor(admin_app, ADMIN, challenge, "security_key", key))[0] == 200

    challenge = (await admin_app.challenge(user["email"]))["challenge_id"]
    key.counter_step = -1  # a clone replaying an older count
    assert generic_refusal(*await with_factor(admin_app, ADMIN, challenge, "security_key", key))
    key.counter_step, key.user_verified = 10, False  # counts ahead again: only the missing UV is wrong
    assert generic_refusal(*await with_factor(admin_app, ADMIN, challenge, "security_key", key))
    key.user_verified, key.origin = True, "https://phish.example"
    assert generic_refusal(*await with_factor(admin_app, ADMIN, challenge, "security_key", key))
    key.origin = ORIGIN
    forger = security_key()  # the same credential id, signed with another private key
    forger.credentials = {cid: dataclasses.replace(stored, private_key=ec.generate_private_key(ec.SECP256R1()),
                                                   sign_count=stored.sign_count + 10)
                          for cid, stored in key.credentials.items()}
    assert generic_refusal(*await with_factor(admin_app, ADMIN, challenge, "security_key", forger))
    codes = [r["error_code"] for r in await login_records(services, org.id, "user_login_attempt")
             if not r["success"]]
    assert codes == ["sign_count_regressed", "webauthn_failed", "webauthn_failed", "webauthn_failed"]
    assert (await user_row(services, user["id"])).failed_logins == 4
    status, body = await with_factor(admin_app, ADMIN, challenge, "security_key", key)  # the real key still works
    assert status == 200


# --- Go ------------------------------------------------------------------------------------------


async def go_sign_in(client: TestClient, authenticator: SoftAuthenticator) -> tuple[Portal, int, Any]:
    app = Portal(client, mobile=True)
    status, started = await app.post("/auth/user/go/options")
    assert status == 200 and started["options"].get("allowCredentials", []) == []  # names nobody
    credential = authenticator.get(started["options"])
    status, body = await app.post("/auth/user/go", {"challenge_id": started["challenge_id"],
                                                    "credential": credential})
    return app, status, body


async def test_go_then_launch_admin_portal(api: Api, services: Services, org: Org, client: TestClient) -> None:
    user, admin = await linked_admin(api)
    laptop = SoftAuthenticator("platform")
    assert (await register(await user_portal(client, user), laptop, "webauthn_device"))[0] == 201
    app, status, body = await go_sign_in(client, laptop)
    assert status == 200 and body["session"] | {"created": None} == {
        "kind": "user", "id": user["id"], "email": user["email"], "organization_id": org.id,
        "portal": "user_portal", "factor": "go", "created": None}
    status, challenge = await app.post(STEP_UP)
    assert challenge["factors"] == ["totp", "webauthn_device", "go"]
    status, body = await with_factor(app, STEP_UP, challenge["challenge_id"], "go", laptop)
    assert status == 200 and body["session"]["portal"] == "admin_portal"
    assert (body["session"]["id"], body["session"]["factor"]) == (admin["id"], "go")
    go_records = [r for r in await login_records(services, org.id) if r.get("mfa_meta") == {"type": "go"}]
    assert [(r["event_type"], "target_resource" in r) for r in go_records] == [
        ("user_login_attempt", False), ("user_login_attempt", True), ("admin_login_attempt", True)]
    assert (await admin_portal_rows(services, org.id))[-2:] == [("user_login_attempt", True),
                                                                ("admin_login_attempt", True)]


async def test_go_is_refused_for_a_direct_admin_login(api: Api, services: Services, org: Org,
                                                      client: TestClient) -> None:
    user, _ = await linked_admin(api)
    laptop = SoftAuthenticator("platform")
    totp_app = await user_portal(client, user)
    assert (await register(totp_app, laptop, "webauthn_device"))[0] == 201
    admin_app = Portal(client, mobile=True)
    challenge = await admin_app.challenge(user["email"])
    assert "go" not in challenge["factors"]
    for path, body in [(f"{ADMIN}/mfa/start", {"factor": "go"}),
                       (f"{ADMIN}/mfa", {"factor": "go", "credential": laptop.get({"challenge": "AAAA"})})]:
        status, refused = await admin_app.post(path, {"challenge_id": challenge["challenge_id"], **body})
        assert (status, refused["error"]["code"]) == (403, "go_not_allowed")
    # Nor from a user-portal session that was not itself signed in with Go.
    status, step_up = await totp_app.post(STEP_UP)
    assert "go" not in step_up["factors"]
    status, refused = await totp_app.post(f"{STEP_UP}/mfa/start", {"challenge_id": step_up["challenge_id"],
                                                                  "factor": "go"})
    assert (status, refused["error"]["code"]) == (403, "go_not_allowed")
    refusals = [r for r in await login_records(services, org.id, "admin_login_attempt")
                if r.get("error_code") == "go_not_allowed"]
    assert len(refusals) == 3 and all(r["mfa_meta"] == {"type": "go"} for r in refusals)
    assert (await user_row(services, user["id"])).failed_logins == 0  # a refused factor is not a wrong one


async def test_go_refusals(api: Api, client: TestClient) -> None:
    user, _ = await linked_admin(api)
    laptop, key = SoftAuthenticator("platform"), security_key()
    app = await user_portal(client, user)
    assert (await register(app, laptop, "webauthn_device"))[0] == 201
    assert (await register(app, key, "security_key"))[0] == 201
    assert generic_refusal(*(await go_sign_in(client, key))[1:])  # a security key is not Go
    stranger = SoftAuthenticator("platform")  # a device this service has never seen
    stranger.create({"rp": {"id": "localhost"}, "user": {"id": "c29tZW9uZQ"}, "challenge": "AAAA"})
    assert generic_refusal(*(await go_sign_in(client, stranger))[1:])
    await api.ok("POST", f"/api/v1/users/{user['id']}/suspend")
    _, status, body = await go_sign_in(client, laptop)
    assert (status, body["error"]["code"]) == (403, "user_suspended")



async def test_a_second_factor_is_added_only_from_an_mfa_session(api: Api, client: TestClient) -> None:
    user = await api.user(mfa=False)
    app = Portal(client, mobile=True)
    status, body = await app.login(user["email"], portal="user")
    assert body["session"]["factor"] == "password"
    status, enrolled = await app.post("/auth/user/mfa/totp")
    assert status == 201 and enrolled["otpauth_uri"].startswith("otpauth://totp/")
    status, body = await app.post("/auth/user/mfa/totp/verify", {"code": "000000"})
    assert (status, body["error"]["code"]) == (400, "invalid_code")
    code = pyotp.TOTP(enrolled["secret"]).now()
    assert (await app.post("/auth/user/mfa/totp/verify", {"code": code}))[0] == 201
    status, body = await app.post("/auth/user/mfa/webauthn/options", {"type": "webauthn_device"})
    assert (status, body["error"]["code"]) == (403, "mfa_session_required")
    challenge = await app.challenge(user["email"], portal="user")
    status, body = await app.totp("/auth/user/login", challenge["challenge_id"], "", code)
    assert generic_refusal(status, body)  # the code that confirmed enrollment is spent
