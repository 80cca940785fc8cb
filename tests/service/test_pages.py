"""The portals' pages around the flows: where ``/`` leads, the CSP and other headers, CSRF
tokens on every state-changing form, and cookies as the sign-in API sets them."""

from __future__ import annotations

import re

import pyotp
from aiohttp.test_utils import TestClient

from tests.conftest import Org


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
