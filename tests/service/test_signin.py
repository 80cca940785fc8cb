"""Signing in with passwords and TOTP: admin portal and user portal, sessions, step-up, lockout,
refusal codes, password changes and the Directory Insights records of every attempt."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pyotp
import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from service import config
from service.adapters import orm
from service.adapters.crypto import token_hash
from service.adapters.sessions import PREFIX as SESSION_PREFIX
from service.app import create_app
from service.bootstrap import Services
from service.domain.model import Role, User
from service.signin import smart_lockout
from service.signin.errors import GENERIC
from service.signin.flows import Signin
from tests.conftest import Api, Org, bootstrap_org
from tests.fakes.portal import USER_PASSWORD, Portal, next_code, previous_code, signin_settings

ADMIN = "/auth/admin/login"
USER = "/auth/user/login"
STEP_UP = "/auth/user/launch-admin-portal"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> config.Settings:
    # Rate limits have their own tests (test_signin_limits.py); here they stay out of the way.
    return signin_settings(database_url, tmp_path, signin_rate_per_account="1000", signin_rate_per_ip="1000")


async def login_records(services: Services, org_id: str, *types: str) -> list[dict[str, Any]]:
    table = orm.insights_events
    types = types or ("user_login_attempt", "admin_login_attempt", "user_lockout")
    async with services.session_factory() as session:
        rows = await session.execute(sa.select(table.c.body).where(
            table.c.organization_id == org_id, table.c.event_type.in_(types)))
    # One commit writes its records with one timestamp: within it, the user's record comes first.
    return sorted((r.body for r in rows), key=lambda b: (b["timestamp"], types.index(b["event_type"])))


async def admin_portal_rows(services: Services, org_id: str) -> list[tuple[str, bool]]:
    """What the seed's filter (initiated_by.administrator = true, target_resource.type =
    admin_portal) finds, through the indexed columns."""
    table = orm.insights_events
    async with services.session_factory() as session:
        rows = await session.execute(sa.select(table.c.timestamp, table.c.event_type, table.c.success).where(
            table.c.organization_id == org_id, table.c.initiated_by_administrator.is_(True),
            table.c.target_resource_type == "admin_portal"))
    ordered = sorted(rows, key=lambda r: (r.timestamp, r.event_type != "user_login_attempt"))
    return [(r.event_type, r.success) for r in ordered]


async def user_row(services: Services, user_id: str) -> Any:
    async with services.session_factory() as session:
        return (await session.execute(sa.select(orm.users).where(orm.users.c.id == user_id))).one()


async def unfamiliar_failures(services: Services, email: str) -> int:
    """The consecutive failures of clients without the known-device cookie on this email."""
    return await Signin(services).smart.failures(smart_lockout.unfamiliar(email))


async def linked_admin(api: Api, role: Role = Role.MANAGER) -> tuple[dict[str, Any], dict[str, Any]]:
    user = await api.user()
    admin = await api.admin_from_user(user, role)
    return user, admin


def generic_refusal(status: int, body: Any) -> bool:
    return status == 401 and body == {"error": {"code": "invalid_credentials", "message": GENERIC}}


# --- admin portal with the user's credentials ---------------------------------------------------


async def test_linked_admin_signs_in_with_user_password_and_totp(api: Api, services: Services, org: Org,
                                                                 client: TestClient) -> None:
    user, admin = await linked_admin(api)
    browser = Portal(client, useragent="Firefox/130")
    challenge = await browser.challenge(user["email"])
    assert challenge["factors"] == ["totp"] and challenge["expires_in"] > 0
    response = await client.post(f"{ADMIN}/mfa", json={"challenge_id": challenge["challenge_id"], "factor": "totp",
                                                       "code": pyotp.TOTP(user["totp_secret"]).now()},
                                 headers={"User-Agent": "Firefox/130"})
    body = await response.json()
    assert response.status == 200 and body["status"] == "signed_in" and "token" not in body
    cookie = response.headers["Set-Cookie"]
    assert cookie.startswith("adminlink_session=") and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    status, session = await browser.get("/auth/session")
    assert status == 200
    assert session | {"created": None} == {
        "kind": "admin", "id": admin["id"], "email": user["email"], "organization_id": org.id,
        "portal": "admin_portal", "factor": "totp", "created": None, "role": "Manager",
        "linked_user_id": user["id"]}
    user_attempt, admin_attempt = await login_records(services, org.id)
    assert (user_attempt["event_type"], admin_attempt["event_type"]) == ("user_login_attempt",
                                                                         "admin_login_attempt")
    assert user_attempt["resource"]["id"] == user["id"] and admin_attempt["resource"]["id"] == admin["id"]
    for record in (user_attempt, admin_attempt):
        assert record["success"] is True and record["initiated_by"]["administrator"] is True
        assert record["target_resource"] == {"type": "admin_portal"} and record["mfa_meta"] == {"type": "totp"}
        assert record["client_ip"] == "127.0.0.1" and record["useragent"] == "Firefox/130"
        assert user["totp_secret"] not in str(record) and USER_PASSWORD not in str(record)
    assert await admin_portal_rows(services, org.id) == [("user_login_attempt", True),
                                                         ("admin_login_attempt", True)]


async def test_failed_admin_portal_attempts_are_recorded_for_the_seed_filter(api: Api, services: Services,
                                                                            org: Org, client: TestClient) -> None:
    user, _ = await linked_admin(api)
    browser = Portal(client)
    status, body = await browser.login(user["email"], "not the password")
    assert generic_refusal(status, body)
    challenge = await browser.challenge(user["email"])
    status, body = await browser.totp(ADMIN, challenge["challenge_id"], user["totp_secret"], code="000000")
    assert generic_refusal(status, body)
    assert await admin_portal_rows(services, org.id) == [("user_login_attempt", False),
                                                         ("admin_login_attempt", False)] * 2
    password_failure, _, factor_failure, _ = await login_records(services, org.id)
    assert "mfa_meta" not in password_failure and password_failure["mfa"] is False
    assert factor_failure["mfa_meta"] == {"type": "totp"} and factor_failure["error_code"] == "totp_rejected"


async def test_a_totp_code_once_accepted_is_refused_again(api: Api, client: TestClient) -> None:
    user, _ = await linked_admin(api)
    browser = Portal(client, mobile=True)
    code = pyotp.TOTP(user["totp_secret"]).now()
    first = await browser.challenge(user["email"])
    status, _ = await browser.totp(ADMIN, first["challenge_id"], user["totp_secret"], code=code)
    assert status == 200
    second = await browser.challenge(user["email"])
    for replay in (code, previous_code(user["totp_secret"])):  # the same code, or an older one
        status, body = await browser.totp(ADMIN, second["challenge_id"], user["totp_secret"], code=replay)
        assert generic_refusal(status, body)


async def test_old_admin_password_and_totp_never_work_after_linking(api: Api, services: Services,
                                                                   client: TestClient) -> None:
    email = "pat.classic@acme.test"
    classic, _ = await api.admin_with_key(Role.ADMINISTRATOR, email)
    app = Portal(client, mobile=True)
    challenge = await app.challenge(email, "a long admin password 1")
    assert challenge["factors"] == ["totp"]
    status, body = await app.totp(ADMIN, challenge["challenge_id"], classic["totp_secret"])
    assert status == 200 and body["session"]["factor"] == "totp" and body["session"]["linked_user_id"] is None
    classic_session = app.token
    user = await api.user(email)
    await api.ok("POST", f"/api/v1/admins/{classic['id']}/link-user", {"acknowledge": True})
    assert (await app.get("/auth/session"))[0] == 401  # linking ended the admin's sessions
    assert classic_session
    status, body = await app.login(email, "a long admin password 1")
    assert generic_refusal(status, body)
    challenge = await app.challenge(email)  # the user's password
    status, body = await app.totp(ADMIN, challenge["challenge_id"], classic["totp_secret"])
    assert generic_refusal(status, body)
    status, body = await app.totp(ADMIN, challenge["challenge_id"], user["totp_secret"])
    assert status == 200 and body["session"]["linked_user_id"] == user["id"]


async def test_classic_admin_totp_is_not_replayable(api: Api, client: TestClient) -> None:
    classic, _ = await api.admin_with_key(Role.HELP_DESK)
    app = Portal(client, mobile=True)
    code = pyotp.TOTP(classic["totp_secret"]).now()
    first = await app.challenge(classic["email"], "a long admin password 1")
    assert (await app.totp(ADMIN, first["challenge_id"], "", code=code))[0] == 200
    second = await app.challenge(classic["email"], "a long admin password 1")
    assert generic_refusal(*await app.totp(ADMIN, second["challenge_id"], "", code=code))


# --- refusals ------------------------------------------------------------------------------------


async def test_each_refusal_has_its_own_code_once_the_password_is_right(api: Api, services: Services,
                                                                       org: Org, client: TestClient) -> None:
    suspended, _ = await linked_admin(api)
    expired, _ = await linked_admin(api)
    locked, _ = await linked_admin(api)
    plain = await api.user()
    await api.ok("POST", f"/api/v1/users/{suspended['id']}/suspend")
    await api.ok("POST", f"/api/v1/users/{expired['id']}/expire-password")
    async with services.session_factory() as session, session.begin():
        await session.execute(sa.update(orm.users).where(orm.users.c.id == locked["id"]).values(account_locked=True))
    app = Portal(client, mobile=True)
    cases = [(suspended, "user_suspended"), (expired, "password_expired"), (locked, "user_locked"),
             (plain, "not_an_admin")]
    for user, code in cases:
        status, body = await app.login(user["email"], "wrong password entirely")
        assert generic_refusal(status, body), code
        status, body = await app.login(user["email"])
        assert (status, body["error"]["code"]) == (403, code)
    status, body = await app.login(plain["email"], portal="user")
    assert status == 200 and body["status"] == "mfa_required"  # the plain user may use the user portal
    staged = await api.user(state="STAGED")
    status, body = await app.login(staged["email"], portal="user")
    assert (status, body["error"]["code"]) == (403, "user_not_active")
    refused = [r for r in await login_records(services, org.id) if r.get("error_code") not in (None,
                                                                                             "invalid_credentials")]
    expected = [code for _, code in cases] + ["user_not_active"]
    assert [r["error_code"] for r in refused if r["event_type"] == "user_login_attempt"] == expected


async def test_no_answer_tells_whether_an_email_exists(api: Api, services: Services, org: Org,
                                                       client: TestClient) -> None:
    user, _ = await linked_admin(api)
    other = await bootstrap_org(services, "Other")
    twin = await Api(client, other.key).user(user["email"])  # the same email in another organization
    await Api(client, other.key).admin_from_user(twin)
    app = Portal(client, mobile=True)
    answers = [await app.login("nobody-here@acme.test"), await app.login("nobody-here@acme.test", portal="user"),
               await app.login(user["email"], "a wrong password 123"),
               await app.login(user["email"]),  # right password, but the email is in two organizations
               await app.login(user["email"], portal="user")]
    assert all(generic_refusal(status, body) for status, body in answers), answers
    for org_id, secret in ((org.id, user["totp_secret"]), (other.id, twin["totp_secret"])):
        challenge = await app.challenge(user["email"], organization_id=org_id)
        status, body = await app.totp(ADMIN, challenge["challenge_id"], secret)
        assert status == 200 and body["session"]["organization_id"] == org_id


async def test_bad_input_is_a_clear_4xx_and_changes_nothing(api: Api, services: Services,
                                                           client: TestClient) -> None:
    user, _ = await linked_admin(api)
    app = Portal(client, mobile=True)
    challenge = await app.challenge(user["email"])
    cid = challenge["challenge_id"]
    cases = [
        (ADMIN, {"email": user["email"]}, 400, "missing_field"),
        (ADMIN, {"email": 5, "password": "x"}, 400, "invalid_field"),
        (ADMIN, {"email": user["email"], "password": "x", "client": "fridge"}, 400, "invalid_field"),
        (f"{ADMIN}/mfa", {"challenge_id": cid}, 400, "missing_field"),
        (f"{ADMIN}/mfa", {"challenge_id": cid, "factor": "carrier-pigeon"}, 400, "invalid_factor"),
        (f"{ADMIN}/mfa", {"challenge_id": cid, "factor": "push"}, 400, "factor_not_enrolled"),
        (f"{ADMIN}/mfa", {"challenge_id": cid, "factor": "totp", "code": 123456}, 400, "invalid_field"),
        (f"{ADMIN}/mfa", {"challenge_id": cid, "factor": "security_key", "credential": "x"}, 400, "invalid_field"),
        (f"{ADMIN}/mfa", {"challenge_id": "made-up", "factor": "totp", "code": "123456"}, 401,
         "challenge_expired"),
        (f"{USER}/mfa", {"challenge_id": cid, "factor": "totp", "code": "123456"}, 401, "challenge_expired"),
        (f"{ADMIN}/mfa/start", {"challenge_id": cid, "factor": "go"}, 403, "go_not_allowed"),
        (STEP_UP, {}, 401, "not_signed_in"),
        ("/auth/user/password", {"old_password": "x", "new_password": "y"}, 401, "not_signed_in"),
        ("/auth/push/devices", {"enrollment_token": "nope", "algorithm": "ES256", "public_key": "x",
                                "signature": "x"}, 401, "invalid_enrollment_token"),
    ]
    for path, body, status, code in cases:
        got_status, got = await app.post(path, body)
        assert (got_status, got["error"]["code"]) == (status, code), (path, body, got)
    response = await client.post(ADMIN, data=b"{not json")
    assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_json"
    assert (await user_row(services, user["id"])).failed_logins == 0
    status, body = await app.totp(ADMIN, cid, user["totp_secret"])  # the challenge still works
    assert status == 200


# --- lockout -------------------------------------------------------------------------------------


async def test_ten_consecutive_failures_from_a_familiar_client_lock_the_user_until_unlocked(
        api: Api, services: Services, org: Org, client: TestClient) -> None:
    """The lockout counts the failures of clients that carry the user's known-device cookie (an
    unfamiliar client's failures do not lock: test_signin_smart_lockout.py)."""
    user, admin = await linked_admin(api)
    secret = user["totp_secret"]
    app = Portal(client, mobile=True)
    await app.sign_in_with_totp(user["email"], secret, code=previous_code(secret))  # now a known device
    for _ in range(8):
        assert generic_refusal(*await app.login(user["email"], "wrong password entirely"))
    challenge = await app.challenge(user["email"])  # a right password does not reset the count...
    assert generic_refusal(*await app.totp(ADMIN, challenge["challenge_id"], "", code="000000"))
    assert (await user_row(services, user["id"])).failed_logins == 9
    portal_user = Portal(client, mobile=True)
    await portal_user.sign_in_with_totp(user["email"], secret, portal="user")  # ...a completed sign-in does
    assert (await user_row(services, user["id"])).failed_logins == 0
    for _ in range(9):
        assert generic_refusal(*await app.login(user["email"], "wrong password entirely"))
    assert not (await user_row(services, user["id"])).account_locked
    challenge = await app.challenge(user["email"])
    assert generic_refusal(*await app.totp(ADMIN, challenge["challenge_id"], "", code="000000"))  # the tenth
    row = await user_row(services, user["id"])
    assert row.account_locked and row.failed_logins == 10
    assert (await app.get("/auth/session"))[0] == 401  # sessions opened before the lock are refused
    assert (await portal_user.get("/auth/session"))[0] == 401
    status, body = await app.login(user["email"])
    assert (status, body["error"]["code"]) == (403, "user_locked")
    lockouts = await login_records(services, org.id, "user_lockout")
    assert [(r["resource"]["id"], r["success"]) for r in lockouts] == [(user["id"], True)]
    assert lockouts[0]["initiated_by"]["id"] == admin["id"] and lockouts[0]["client_ip"] == "127.0.0.1"
    await api.ok("POST", f"/api/v1/users/{user['id']}/unlock")
    await app.sign_in_with_totp(user["email"], secret, code=next_code(secret))


async def test_the_last_billing_admin_is_never_locked_out(api: Api, services: Services, org: Org,
                                                          client: TestClient) -> None:
    """Locking would leave the organization without a way in: the lock is refused, recorded and
    reported to the other admins; the rate limits still slow the guessing down."""
    user, billing = await linked_admin(api, Role.BILLING)
    boss = Api(client, (await api.ok("POST", f"/api/v1/admins/{billing['id']}/api-keys"))["key"])
    status, _ = await boss.post(f"/api/v1/admins/{org.admin_id}/remove-access", {"acknowledge": True})
    assert status == 204  # the linked Billing admin is now the only one
    other, _ = await boss.admin_with_key(Role.MANAGER)
    app = Portal(client, mobile=True)
    await app.sign_in_with_totp(user["email"], user["totp_secret"], code=previous_code(user["totp_secret"]))
    for _ in range(10):
        assert generic_refusal(*await app.login(user["email"], "wrong password entirely"))
    row = await user_row(services, user["id"])
    assert not row.account_locked and row.failed_logins == 10
    refused = await login_records(services, org.id, "user_lockout")
    assert [(r["resource"]["id"], r["success"]) for r in refused] == [(user["id"], False)]
    async with services.session_factory() as session:
        notices = (await session.execute(sa.select(orm.mail_outbox.c.recipient).where(
            orm.mail_outbox.c.organization_id == org.id,
            orm.mail_outbox.c.subject.like("%last Administrator with Billing%")))).scalars().all()
    assert notices == [other["email"]]
    await app.sign_in_with_totp(user["email"], user["totp_secret"])


async def test_lockout_threshold_is_configurable(database_url: str, tmp_path: Path, services: Services,
                                                 aiohttp_client: Any) -> None:
    services.settings = signin_settings(database_url, tmp_path, lockout_threshold="3")
    client = await aiohttp_client(create_app(services))
    org = await bootstrap_org(services)
    user = await Api(client, org.key).user()
    app = Portal(client, mobile=True)
    await app.sign_in_with_totp(user["email"], user["totp_secret"], portal="user")  # a familiar client
    for _ in range(3):
        assert generic_refusal(*await app.login(user["email"], "wrong password entirely", portal="user"))
    status, body = await app.login(user["email"], portal="user")
    assert (status, body["error"]["code"]) == (403, "user_locked")


# --- sessions ------------------------------------------------------------------------------------


async def test_session_opened_before_the_admin_role_is_removed_is_refused(api: Api, client: TestClient) -> None:
    user, admin = await linked_admin(api)
    app = Portal(client, mobile=True)
    await app.sign_in_with_totp(user["email"], user["totp_secret"])
    assert (await app.get("/auth/session"))[0] == 200
    await api.ok("POST", f"/api/v1/admins/{admin['id']}/remove-access", {"acknowledge": True})
    status, body = await app.get("/auth/session")
    assert (status, body["error"]["code"]) == (401, "session_ended")
    status, body = await app.login(user["email"])
    assert (status, body["error"]["code"]) == (403, "not_an_admin")


async def test_a_role_change_during_sign_in_ends_the_challenge(api: Api, client: TestClient) -> None:
    user, admin = await linked_admin(api)
    app = Portal(client, mobile=True)
    challenge = await app.challenge(user["email"])
    await api.ok("POST", f"/api/v1/admins/{admin['id']}/remove-access", {"acknowledge": True})
    status, body = await app.totp(ADMIN, challenge["challenge_id"], user["totp_secret"])
    assert (status, body["error"]["code"]) == (403, "not_an_admin")


async def test_mobile_app_gets_a_bearer_token_and_sessions_idle_out(api: Api, services: Services,
                                                                   client: TestClient) -> None:
    user, _ = await linked_admin(api)
    app = Portal(client, mobile=True)
    challenge = await app.challenge(user["email"])
    response = await client.post(f"{ADMIN}/mfa", json={
        "challenge_id": challenge["challenge_id"], "factor": "totp", "client": "mobile",
        "code": pyotp.TOTP(user["totp_secret"]).now()})
    body = await response.json()
    # No session cookie: only the known-device cookie, which the app keeps in its cookie store.
    (cookie,) = response.cookies
    assert cookie.startswith("adminlink_device_") and body["token"]
    idle = await services.redis.ttl(SESSION_PREFIX + token_hash(body["token"]))
    assert 0 < idle <= services.settings.session_idle_seconds == 3600
    status, session = await Portal(client).call("GET", "/auth/session", Authorization=f"Bearer {body['token']}")
    assert status == 200 and session["portal"] == "admin_portal"
    await Portal(client).call("POST", "/auth/logout", Authorization=f"Bearer {body['token']}")
    assert (await Portal(client).call("GET", "/auth/session", Authorization=f"Bearer {body['token']}"))[0] == 401


async def test_cookies_are_secure_unless_configured_off(api: Api, services: Services, aiohttp_client: Any) -> None:
    user, _ = await linked_admin(api)
    services.settings = dataclasses.replace(services.settings, cookie_secure=True)
    client = await aiohttp_client(create_app(services))
    challenge = await Portal(client).challenge(user["email"])
    response = await client.post(f"{ADMIN}/mfa", json={"challenge_id": challenge["challenge_id"], "factor": "totp",
                                                       "code": pyotp.TOTP(user["totp_secret"]).now()})
    session_cookie, device_cookie = response.headers.getall("Set-Cookie")  # and the known-device cookie
    assert session_cookie.startswith("adminlink_session=") and device_cookie.startswith("adminlink_device_")
    for cookie in (session_cookie, device_cookie):
        assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Path=/;" in device_cookie and "Max-Age=7776000" in device_cookie  # 90 days


# --- user portal and step-up ---------------------------------------------------------------------


async def test_user_portal_sign_in_records_no_admin_fields(api: Api, services: Services, org: Org,
                                                          client: TestClient) -> None:
    user, _ = await linked_admin(api)
    browser = Portal(client)
    session = await browser.sign_in_with_totp(user["email"], user["totp_secret"], portal="user")
    assert (session["kind"], session["portal"], session["factor"]) == ("user", "user_portal", "totp")
    assert client.session.cookie_jar.filter_cookies(client.make_url("/"))["adminlink_user_session"].value
    (record,) = await login_records(services, org.id)
    assert record["event_type"] == "user_login_attempt" and record["success"] is True
    assert "target_resource" not in record and "administrator" not in record["initiated_by"]
    assert record["mfa_meta"] == {"type": "totp"} and record["initiated_by"]["type"] == "user"
    assert await admin_portal_rows(services, org.id) == []


async def test_user_without_mfa_signs_in_to_the_user_portal_only(api: Api, client: TestClient, services: Services,
                                                                org: Org) -> None:
    user, _ = await linked_admin(api)
    await api.ok("DELETE", f"/api/v1/users/{user['id']}/mfa/totp")  # its only factor
    app = Portal(client, mobile=True)
    status, body = await app.login(user["email"], portal="user")
    assert status == 200 and body["status"] == "signed_in" and body["session"]["factor"] == "password"
    [record] = [r for r in await login_records(services, org.id, "user_login_attempt") if r["success"]]
    assert record["mfa"] is False and "mfa_meta" not in record  # no factor was used
    status, body = await app.login(user["email"])
    assert (status, body["error"]["code"]) == (409, "mfa_not_enrolled")
    status, body = await app.post(STEP_UP)
    assert (status, body["error"]["code"]) == (409, "mfa_not_enrolled")


async def test_launch_admin_portal_asks_for_a_fresh_factor(api: Api, services: Services, org: Org,
                                                          client: TestClient) -> None:
    user, admin = await linked_admin(api)
    browser = Portal(client)
    spent = pyotp.TOTP(user["totp_secret"]).now()
    await browser.sign_in_with_totp(user["email"], user["totp_secret"], portal="user", code=spent)
    status, challenge = await browser.post(STEP_UP)
    assert status == 200 and challenge["factors"] == ["totp"]  # not Go: this session used TOTP
    stranger = Portal(client, mobile=True)  # another user-portal session cannot complete it
    plain = await api.user()
    await stranger.sign_in_with_totp(plain["email"], plain["totp_secret"], portal="user")
    status, body = await stranger.totp(STEP_UP, challenge["challenge_id"], user["totp_secret"])
    assert (status, body["error"]["code"]) == (401, "challenge_expired")
    status, body = await stranger.post(STEP_UP)
    assert (status, body["error"]["code"]) == (403, "not_an_admin")
    status, body = await browser.totp(STEP_UP, challenge["challenge_id"], "", spent)
    assert generic_refusal(status, body)  # the code that opened the user portal is spent
    status, body = await browser.totp(STEP_UP, challenge["challenge_id"], "", next_code(user["totp_secret"]))
    assert status == 200 and body["session"]["portal"] == "admin_portal" and body["session"]["id"] == admin["id"]
    status, session = await browser.get("/auth/session?portal=admin_portal")
    assert status == 200 and session["kind"] == "admin"
    status, session = await browser.get("/auth/session?portal=user_portal")
    assert status == 200 and session["kind"] == "user"  # both portals stay open side by side
    assert await admin_portal_rows(services, org.id) == [
        ("user_login_attempt", False), ("admin_login_attempt", False),  # the spent code
        ("user_login_attempt", True), ("admin_login_attempt", True)]


# --- passwords -----------------------------------------------------------------------------------


async def test_users_change_their_password_in_the_user_portal(api: Api, services: Services,
                                                              client: TestClient) -> None:
    user, _ = await linked_admin(api)
    app = Portal(client, mobile=True)
    await app.sign_in_with_totp(user["email"], user["totp_secret"], portal="user")
    old_token = app.token
    cases = [({"old_password": "not it at all", "new_password": "a brand new password"}, 401, "invalid_credentials"),
             ({"old_password": USER_PASSWORD, "new_password": "short"}, 400, "password_too_short"),
             ({"old_password": USER_PASSWORD, "new_password": user["email"]}, 400, "password_is_email"),
             ({"old_password": USER_PASSWORD, "new_password": USER_PASSWORD}, 400, "password_unchanged"),
             ({"old_password": USER_PASSWORD}, 400, "missing_field")]
    for body, status, code in cases:
        got_status, got = await app.post("/auth/user/password", body)
        assert (got_status, got["error"]["code"]) == (status, code), body
    assert (await user_row(services, user["id"])).failed_logins == 1  # the wrong old password counted
    status, body = await app.post("/auth/user/password", {"old_password": USER_PASSWORD,
                                                          "new_password": "a brand new password"})
    assert status == 200 and body["token"] != old_token
    status, _ = await Portal(client).call("GET", "/auth/session", Authorization=f"Bearer {old_token}")
    assert status == 401  # the other sessions ended
    assert (await app.get("/auth/session"))[0] == 200
    assert generic_refusal(*await app.login(user["email"], USER_PASSWORD))
    assert (await app.login(user["email"], "a brand new password"))[0] == 200
    await api.ok("PUT", f"/api/v1/users/{user['id']}/password-authority", {"authority": "scim"})
    status, body = await app.post("/auth/user/password", {"old_password": "a brand new password",
                                                          "new_password": "yet another password"})
    assert (status, body["error"]["code"]) == (409, "password_managed_elsewhere")


async def test_linked_admin_changes_its_password_only_in_the_user_portal(api: Api, services: Services,
                                                                        client: TestClient) -> None:
    user, admin = await linked_admin(api, Role.BILLING)
    app = Portal(client, mobile=True)
    await app.sign_in_with_totp(user["email"], user["totp_secret"])
    status, body = await app.post("/auth/admin/password", {"old_password": USER_PASSWORD,
                                                           "new_password": "a brand new password"})
    assert (status, body["error"]["code"]) == (409, "use_user_portal")
    key = (await api.ok("POST", f"/api/v1/admins/{admin['id']}/api-keys"))["key"]
    status, body = await Api(client, key).call("PUT", f"/api/v1/users/{user['id']}/password",
                                               {"password": "a brand new password"})
    assert (status, body["error"]["code"]) == (403, "use_user_portal")
    classic, _ = await api.admin_with_key(Role.MANAGER)
    challenge = await app.challenge(classic["email"], "a long admin password 1")
    await app.totp(ADMIN, challenge["challenge_id"], classic["totp_secret"])
    status, body = await app.post("/auth/admin/password", {"old_password": "a long admin password 1",
                                                           "new_password": "another admin password"})
    assert status == 200 and body["session"]["id"] == classic["id"]
    assert (await app.login(classic["email"], "another admin password"))[0] == 200


def test_failures_lock_at_the_threshold_and_a_sign_in_resets_them() -> None:
    user = User("org", "pat@acme.test", "pat")
    assert [user.record_failed_login(3) for _ in range(3)] == [False, False, True]
    user.lock()
    assert user.account_locked and user.auth_epoch == 1  # locking ends the sessions
    assert user.record_failed_login(3) is False and user.auth_epoch == 1  # already locked: no second lockout
    user.unlock()
    user.record_failed_login(3)
    user.record_successful_login()
    assert (user.failed_logins, user.account_locked) == (0, False)
