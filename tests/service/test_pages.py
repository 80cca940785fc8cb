"""The portals' pages around the flows: where ``/`` leads, the CSP and other headers, CSRF
tokens on every state-changing form, and cookies as the sign-in API sets them."""

from __future__ import annotations

import re

import pyotp
from aiohttp.test_utils import TestClient

from service.domain.model import Role
from tests.conftest import Api, Org

USER_PASSWORD = "a long user password 1"
NEW_PASSWORD = "a brand new long password 2"


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert found, "the form carries a CSRF token"
    return found.group(1)


async def test_the_root_leads_to_the_user_portal(client: TestClient) -> None:
    response = await client.get("/", allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (303, "/portal/")
    response = await client.get("/portal/", allow_redirects=False)
    assert (response.status, response.headers["Location"]) == (303, "/portal/sign-in")


async def test_pages_send_a_strict_csp_and_carry_no_inline_script_or_style(client: TestClient) -> None:
    for path in ("/portal/sign-in", "/admin/sign-in"):
        response = await client.get(path)
        html = await response.text()
        csp = response.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert response.headers["X-Frame-Options"] == "DENY"
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), "every script is a file"
        assert "<style" not in html and " style=" not in html
        assert re.findall(r'<label for="(\w+)"', html) and all(
            f'id="{name}"' in html for name in re.findall(r'<label for="(\w+)"', html))


async def test_a_form_without_this_browsers_csrf_token_is_refused_and_changes_nothing(
        client: TestClient, org: Org) -> None:
    await client.get("/admin/sign-in")  # the browser's CSRF cookie
    refused = await client.post("/admin/sign-in", data={"email": org.email, "password": org.password,
                                                         "csrf": "0" * 64}, allow_redirects=False)
    assert refused.status == 403
    assert "stale" in await refused.text()
    assert "adminlink_admin_challenge" not in {c.key for c in client.session.cookie_jar}


async def test_the_admin_sign_in_pages_set_cookies_as_the_api_does(client: TestClient, org: Org) -> None:
    page = await client.get("/admin/sign-in")
    csrf_cookie = page.cookies["adminlink_csrf"]
    assert csrf_cookie["httponly"] and csrf_cookie["samesite"] == "Strict"
    token = csrf_of(await page.text())
    password = await client.post("/admin/sign-in", data={"email": org.email, "password": org.password,
                                                          "csrf": token}, allow_redirects=False)
    assert (password.status, password.headers["Location"]) == (303, "/admin/sign-in/verify")
    challenge = password.cookies["adminlink_admin_challenge"]
    assert challenge["httponly"] and challenge["samesite"] == "Lax" and challenge["path"] == "/admin/"
    verified = await client.post("/admin/sign-in/totp", data={"code": pyotp.TOTP(org.totp_secret).now(),
                                                              "csrf": token}, allow_redirects=False)
    assert (verified.status, verified.headers["Location"]) == (303, "/admin/")
    session = verified.cookies["adminlink_session"]
    assert session["httponly"] and session["samesite"] == "Lax"
    # A sign-in with MFA makes this browser a known device, for the pages' sign-in too.
    [device] = [cookie for name, cookie in verified.cookies.items() if name.startswith("adminlink_device_")]
    assert device["httponly"] and device["samesite"] == "Lax" and device["path"] == "/"
    home = await client.get("/admin/")
    assert home.status == 200 and org.email in await home.text()
    signed_out = await client.post("/admin/sign-out", data={"csrf": token}, allow_redirects=False)
    assert signed_out.headers["Location"] == "/admin/sign-in"
    after = await client.get("/admin/users", allow_redirects=False)
    assert after.headers["Location"].startswith("/admin/sign-in?next=")


async def test_a_next_address_off_this_site_is_ignored(client: TestClient, org: Org) -> None:
    token = csrf_of(await (await client.get("/admin/sign-in")).text())
    await client.post("/admin/sign-in", data={"email": org.email, "password": org.password, "csrf": token,
                                              "next": "//evil.example/"}, allow_redirects=False)
    verified = await client.post("/admin/sign-in/totp", data={"code": pyotp.TOTP(org.totp_secret).now(),
                                                              "csrf": token}, allow_redirects=False)
    assert verified.headers["Location"] == "/admin/"


async def signed_in_console(client: TestClient, org: Org) -> str:
    """An admin-portal session in the test client's cookie jar; answers the page's CSRF token."""
    token = csrf_of(await (await client.get("/admin/sign-in")).text())
    await client.post("/admin/sign-in", data={"email": org.email, "password": org.password, "csrf": token})
    await client.post("/admin/sign-in/totp", data={"code": pyotp.TOTP(org.totp_secret).now(), "csrf": token})
    return token


async def test_the_console_requires_totp_and_no_page_shows_the_admin_a_secret(
        client: TestClient, api: Api, org: Org) -> None:
    user = await api.user(mfa=False)
    token = await signed_in_console(client, org)
    done = await client.post(f"/admin/users/{user['id']}/actions/require-totp", data={"csrf": token})
    page = await done.text()
    assert "must enroll TOTP in the user portal" in page and "otpauth" not in page
    shown = await api.ok("GET", f"/api/v1/users/{user['id']}")
    assert shown["mfa"] == {"configured": False, "required": True, "factors": []}
    again = await client.post(f"/admin/users/{user['id']}/actions/require-totp", data={"csrf": token})
    assert again.status == 200  # still not enrolled: requiring again changes nothing
    bogus = await client.post(f"/admin/users/{user['id']}/actions/make-coffee", data={"csrf": token})
    assert bogus.status == 404


async def test_a_user_changes_the_password_in_the_user_portal(client: TestClient, api: Api) -> None:
    user = await api.user(mfa=False)
    token = csrf_of(await (await client.get("/portal/sign-in")).text())
    signed_in = await client.post("/portal/sign-in", data={"email": user["email"], "password": USER_PASSWORD,
                                                           "csrf": token}, allow_redirects=False)
    assert signed_in.headers["Location"] == "/portal/mfa"  # no factor yet
    mismatch = await client.post("/portal/password", data={"old_password": USER_PASSWORD, "csrf": token,
                                                           "new_password": NEW_PASSWORD, "confirm": "other"})
    text = await mismatch.text()
    assert mismatch.status == 400 and 'aria-describedby="confirm-error"' in text
    wrong = await client.post("/portal/password", data={"old_password": "not it at all", "csrf": token,
                                                        "new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert wrong.status == 401 and 'id="password-error"' in await wrong.text()
    changed = await client.post("/portal/password", data={"old_password": USER_PASSWORD, "csrf": token,
                                                          "new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert changed.status == 200 and "Your password is changed." in await changed.text()
    old = await client.post("/portal/sign-in", data={"email": user["email"], "password": USER_PASSWORD,
                                                     "csrf": token})
    assert 'data-code="invalid_credentials"' in await old.text()


async def test_an_admin_linked_to_a_user_is_sent_to_the_user_portal_to_change_its_password(
        client: TestClient, api: Api, org: Org) -> None:
    user = await api.user()
    await api.admin_from_user(user, Role.MANAGER)
    token = csrf_of(await (await client.get("/admin/sign-in")).text())
    await client.post("/admin/sign-in", data={"email": user["email"], "password": USER_PASSWORD, "csrf": token})
    await client.post("/admin/sign-in/totp", data={"code": pyotp.TOTP(user["totp_secret"]).now(), "csrf": token})
    form = {"old_password": USER_PASSWORD, "new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD, "csrf": token}
    refused = await client.post("/admin/password", data=form)
    text = await refused.text()
    assert refused.status == 409 and 'data-code="use_user_portal"' in text and 'href="/portal/password"' in text


async def test_a_classic_admin_changes_its_own_password_in_the_admin_portal(client: TestClient, org: Org) -> None:
    token = await signed_in_console(client, org)
    form = {"old_password": org.password, "new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD, "csrf": token}
    changed = await client.post("/admin/password", data=form)
    assert changed.status == 200 and "Your password is changed." in await changed.text()
    old = await client.post("/admin/sign-in", data={"email": org.email, "password": org.password, "csrf": token})
    assert 'data-code="invalid_credentials"' in await old.text()


async def test_a_page_scripts_call_needs_the_csrf_header(client: TestClient) -> None:
    token = csrf_of(await (await client.get("/portal/sign-in")).text())
    refused = await client.post("/portal/sign-in/go/options", json={})
    assert (refused.status, (await refused.json())["code"]) == (403, "csrf_failed")
    started = await client.post("/portal/sign-in/go/options", json={}, headers={"X-CSRF-Token": token})
    assert started.status == 200 and "challenge" in (await started.json())["options"]
    ended = await client.post("/portal/mfa/webauthn/options", json={"type": "security_key"},
                              headers={"X-CSRF-Token": token})
    assert (ended.status, (await ended.json())["code"]) == (401, "not_signed_in")


async def test_an_admin_is_made_from_a_user_found_by_email(client: TestClient, api: Api, org: Org) -> None:
    user = await api.user()
    token = await signed_in_console(client, org)
    unknown = await client.post("/admin/admins/from-user", data={"email": "nobody@acme.test", "csrf": token,
                                                                 "role": Role.MANAGER.value})
    assert unknown.status == 404 and 'data-code="user_not_found"' in await unknown.text()
    made = await client.post("/admin/admins/from-user", data={"email": user["email"].upper(), "csrf": token,
                                                              "role": Role.MANAGER.value})
    page = await made.text()
    assert made.status == 200 and "now holds an admin role" in page and "Inherited from user" in page
    shown = await api.ok("GET", f"/api/v1/users/{user['id']}")
    assert shown["admin"]["role"] == Role.MANAGER.value


async def test_an_admins_role_is_changed_and_the_last_billing_admin_keeps_its_own(
        client: TestClient, api: Api, org: Org) -> None:
    manager, _ = await api.admin_with_key(Role.MANAGER)
    token = await signed_in_console(client, org)
    changed = await client.post(f"/admin/admins/{manager['id']}/role", data={"role": Role.HELP_DESK.value,
                                                                             "csrf": token})
    assert changed.status == 200 and "role is changed" in await changed.text()
    assert (await api.ok("GET", f"/api/v1/admins/{manager['id']}"))["role"] == Role.HELP_DESK.value
    kept = await client.post(f"/admin/admins/{org.admin_id}/role", data={"role": Role.READ_ONLY.value,
                                                                         "csrf": token})
    assert kept.status == 409 and "data-code=" in await kept.text()
