"""The user portal in real Chromium, with Chrome's virtual authenticators running the real
WebAuthn ceremonies against the real server: a user enrolls TOTP (reading the key from the
page), a device authenticator and a security key; signs in with Go; launches the admin portal
with step-up; a user whose administrator requires TOTP signs in with the username and is sent to
enroll it first; and signs in with a push that the test push device approves, then denies."""

from __future__ import annotations

import pyotp
from playwright.async_api import Browser, Page

from service.domain.model import Role
from tests.browser.conftest import Site
from tests.browser.harness import USER_PASSWORD, code_after, shot, sign_in, totp_step, virtual_authenticator
from tests.fakes.push_device import PushDevice


async def sign_out(page: Page) -> None:
    await page.click("#sign-out")
    assert page.url.endswith("/portal/sign-in"), page.url


async def test_a_user_enrolls_totp_a_device_and_a_key_signs_in_with_go_and_launches_the_admin_portal(
        browser: Browser, site: Site) -> None:
    user = await site.api.user(mfa=False)
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await virtual_authenticator(context, page, "internal")
    usb, usb_id = await virtual_authenticator(context, page, "usb")
    used: set[str] = set()

    await page.goto(site.base + "/")
    assert page.url.endswith("/portal/sign-in")
    await shot(page, "portal-sign-in")
    await sign_in(page, site.base, "portal", user["email"], USER_PASSWORD)
    assert page.url.endswith("/portal/mfa"), page.url  # no factor yet: enroll one
    await page.click("#add-totp")
    secret = (await page.inner_text("#totp-secret")).strip()
    assert await page.locator(".qr svg").count() == 1
    await shot(page, "portal-totp-enroll")
    await page.fill("#code", "000000" if pyotp.TOTP(secret).now() != "000000" else "111111")
    await page.click("#confirm-totp")
    assert "does not match" in await page.inner_text("#code-error")
    assert await page.get_attribute("#code", "aria-describedby") == "code-error"
    await page.fill("#code", code_after(secret, used))
    await page.click("#confirm-totp")
    assert "authenticator app is enrolled" in await page.inner_text("#flash")

    # Adding another factor needs a session signed in with one.
    await sign_out(page)
    await sign_in(page, site.base, "portal", user["email"], USER_PASSWORD)
    await shot(page, "portal-verify")
    await totp_step(page, code_after(secret, used))
    assert page.url == site.base + "/portal/"
    await page.goto(site.base + "/portal/mfa")
    for button, name in (("#add-device", "laptop"), ("#add-key", "yubikey")):
        await page.fill("#authenticator-name", name)
        async with page.expect_navigation(url="**/portal/mfa?done=webauthn"):
            await page.click(button)
    factors = await page.inner_text("#factors")
    assert "Device authenticator: laptop" in factors and "Security key: yubikey" in factors
    await shot(page, "portal-mfa")
    enrolled = await site.api.ok("GET", f"/api/v1/users/{user['id']}")
    assert enrolled["mfa"]["factors"] == ["totp", "webauthn_device", "security_key"]

    # Go: passwordless, with the device authenticator's discoverable credential.
    await site.api.admin_from_user(user, Role.ADMINISTRATOR)
    await sign_out(page)
    # The security key stays plugged in but untouched: only the device authenticator answers.
    await usb.send("WebAuthn.setAutomaticPresenceSimulation", {"authenticatorId": usb_id, "enabled": False})
    await page.click("#go")
    await page.wait_for_url(site.base + "/portal/")
    assert await page.inner_text("#me-factor") == "go"
    await shot(page, "portal-home")
    await page.click("nav >> text=Password")
    await shot(page, "portal-password")
    await page.goto(site.base + "/portal/")

    # Launch Admin Portal: step-up, where a Go session may use Go.
    await page.click("#launch-admin")
    assert page.url.endswith("/portal/launch-admin/verify")
    assert await page.locator("#verify-go").count() == 1
    await shot(page, "portal-step-up")
    await page.click("#verify-go")
    await page.wait_for_url(site.base + "/admin/")
    assert user["email"] in await page.inner_text("header")

    # The admin portal's own sign-in never offers Go, and refuses a Go credential.
    admin_signin = await context.new_page()
    await sign_in(admin_signin, site.base, "admin", user["email"], USER_PASSWORD)
    assert admin_signin.url.endswith("/admin/sign-in/verify")
    assert await admin_signin.locator("#verify-go").count() == 0
    assert await admin_signin.locator("#verify-security_key").count() == 1
    refused = await admin_signin.evaluate("""async () => {
        const csrf = document.querySelector('meta[name="csrf-token"]').content;
        const answer = await fetch("/admin/sign-in/webauthn/options", {method: "POST",
            headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}, body: JSON.stringify({factor: "go"})});
        return [answer.status, (await answer.json()).code];
    }""")
    assert refused == [403, "go_not_allowed"]
    await shot(admin_signin, "admin-verify")


async def test_a_user_whose_administrator_requires_totp_signs_in_with_the_username_and_enrolls_it_first(
        browser: Browser, site: Site) -> None:
    user = await site.api.user(mfa=False)
    await site.api.ok("POST", f"/api/v1/users/{user['id']}/mfa/totp")  # the administrator requires TOTP
    page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
    await sign_in(page, site.base, "portal", user["username"], USER_PASSWORD)
    assert page.url.endswith("/portal/mfa/totp"), page.url
    assert "administrator requires an authenticator app" in await page.inner_text("#totp-required")
    await shot(page, "portal-totp-required")
    await page.goto(site.base + "/portal/password")  # nothing else until it is enrolled
    assert page.url.endswith("/portal/mfa/totp"), page.url
    await page.click("#add-totp")
    secret = (await page.inner_text("#totp-secret")).strip()
    await page.fill("#code", code_after(secret, set()))
    await page.click("#confirm-totp")
    assert "authenticator app is enrolled" in await page.inner_text("#flash")
    await page.goto(site.base + "/portal/password")
    assert page.url.endswith("/portal/password"), page.url


async def test_a_push_sign_in_waits_for_the_device_which_approves_then_denies(browser: Browser, site: Site) -> None:
    user = await site.api.user(mfa=False)
    page = await (await browser.new_context(viewport={"width": 1280, "height": 900})).new_page()
    await sign_in(page, site.base, "portal", user["email"], USER_PASSWORD)
    await page.click("#add-push")
    token = (await page.inner_text("#pairing-token")).strip()
    assert await page.locator(".qr svg").count() == 1
    assert (await page.inner_text("#pairing-server")).strip() == site.base  # the QR code's server too
    await shot(page, "portal-push-pairing")
    device = PushDevice()
    await device.enroll(site.client, token, "pixel")

    for decision, outcome in (("approve", "approved"), ("deny", "denied")):
        await page.goto(site.base + "/portal/sign-in")
        if page.url.endswith("/portal/"):
            await sign_out(page)
        await sign_in(page, site.base, "portal", user["email"], USER_PASSWORD)
        await page.click("#verify-push")
        assert page.url.endswith("/portal/sign-in/push")
        await shot(page, "portal-push-waiting")
        push = await device.inbox(site.client)
        assert push is not None
        status, _ = await device.answer(site.client, push, decision)
        assert status == 200
        if outcome == "approved":
            await page.wait_for_url(site.base + "/portal/")
        else:
            await page.wait_for_selector('#push-wait[data-state="denied"]')
            assert "denied" in await page.inner_text("#push-state")
            await shot(page, "portal-push-denied")
