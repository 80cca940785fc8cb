"""The admin portal in real Chromium: an Administrator with Billing signs in with its own
password and TOTP and grants a user an admin role behind the seed's warning; updates a classic
admin with its matching user; a Help Desk admin sees what its role may not do, disabled; and
removing an admin role ends that admin's open session."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from playwright.async_api import Browser, Page

from service.domain.model import Role
from tests.browser.conftest import Site
from tests.browser.harness import ADMIN_PASSWORD, USER_PASSWORD, code_after, shot, sign_in, totp_step
from tests.conftest import Org


async def admin_page(browser: Browser, site: Site, email: str, password: str, secret: str,
                     used: set[str]) -> Page:
    context = await browser.new_context(viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    await sign_in(page, site.base, "admin", email, password)
    assert page.url.endswith("/admin/sign-in/verify"), page.url
    await totp_step(page, code_after(secret, used))
    assert page.url == site.base + "/admin/", page.url
    return page


async def events(site: Site, event_type: str, resource_id: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = await site.api.ok("POST", "/insights/directory/v1/events", {
        "service": ["all"], "start_time": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
        "search_term": {"and": [{"event_type": event_type}, {"resource.id": resource_id}]}})
    return found


async def test_a_billing_admin_grants_a_user_an_admin_role_behind_the_warning(
        browser: Browser, site: Site, org: Org) -> None:
    user = await site.api.user()
    anonymous = await (await browser.new_context()).new_page()
    await anonymous.goto(site.base + "/admin/users")
    assert "/admin/sign-in?next=" in anonymous.url
    await shot(anonymous, "admin-sign-in")
    page = await admin_page(browser, site, org.email, org.password, org.totp_secret, set())
    await shot(page, "admin-home")
    await page.click("header >> text=Password")
    await shot(page, "admin-password")
    await page.click("nav >> text=Users")
    await shot(page, "admin-users")
    await page.fill("#search-email", user["email"])
    await page.click("#search")
    row = page.locator(f'tr[data-user-id="{user["id"]}"]')
    assert await page.locator("#users tbody tr").count() == 1
    assert "Activated" in await row.inner_text()
    await row.locator("a").click()
    await page.select_option("#grant-role", Role.HELP_DESK.value)
    await page.click("#grant-admin")
    assert await page.locator("#grant-admin-dialog").is_visible()
    await shot(page, "admin-grant-warning")
    await page.click("#grant-admin-continue")  # not acknowledged: the browser keeps the dialog open
    assert page.url.endswith(f"/admin/users/{user['id']}")
    assert await page.locator("#grant-admin-dialog").is_visible()
    await page.check("#grant-admin-ack")
    await page.click("#grant-admin-continue")
    assert "now holds an admin role" in await page.inner_text("#flash")
    assert "Help Desk" in await page.inner_text("#admin-account")
    await shot(page, "admin-user-security")

    await page.click("nav >> text=Directory Insights")
    await page.fill("#user", user["email"])
    await page.click("#filter")
    types = await page.locator("#events tbody tr").evaluate_all("rows => rows.map(r => r.dataset.eventType)")
    assert types[:2] == ["admin_create", "user_update"] or types[:2] == ["user_update", "admin_create"], types
    await page.select_option("#event_type", "admin_create")
    await page.click("#filter")
    row = page.locator("#events tbody tr")
    assert await row.count() == 1
    await row.locator("summary").click()
    assert '"auth_method": "admin_portal_session"' in await row.locator("pre").inner_text()
    await shot(page, "admin-insights")

    admin = (await site.api.ok("GET", f"/api/v1/users/{user['id']}"))["admin"]
    assert admin["role"] == Role.HELP_DESK.value
    [update] = [e for e in await events(site, "user_update", user["id"]) if "admin" in str(e.get("changes"))]
    [create] = await events(site, "admin_create", admin["id"])
    assert update["initiated_by"]["id"] == create["initiated_by"]["id"] == org.admin_id
    assert update["auth_method"] == "admin_portal_session"
    outbox = await site.api.ok("GET", "/api/v1/mail/outbox")
    assert any(mail["to"] == user["email"] for mail in outbox["results"])


async def test_updating_a_classic_admin_with_its_matching_user_deletes_the_admin_password(
        browser: Browser, site: Site, org: Org) -> None:
    classic, _ = await site.api.admin_with_key(Role.MANAGER)
    await site.api.user(classic["email"])
    theirs = await admin_page(browser, site, classic["email"], ADMIN_PASSWORD, classic["totp_secret"], set())
    page = await admin_page(browser, site, org.email, org.password, org.totp_secret, set())
    await page.click("nav >> text=Administrators")
    row = page.locator(f'tr[data-admin-id="{classic["id"]}"]')
    assert await row.locator(".mfa-status").inner_text() == "TOTP"
    await row.locator(".tooltip").focus()
    assert "A user with this email exists" in await row.locator(".tip").inner_text()
    assert await row.locator(".tip").is_visible()
    await shot(page, "admin-admins-matching-user")
    await page.click(f"#link-{classic['id']}")
    await page.check(f"#link-ack-{classic['id']}")
    await shot(page, "admin-link-warning")
    await page.click(f"#link-continue-{classic['id']}")
    assert "matching user's credentials" in await page.inner_text("#flash")
    assert await row.locator(".mfa-status").inner_text() == "Inherited from user"
    await shot(page, "admin-admins-linked")
    await theirs.reload()  # the admin's open session ended with its credentials
    assert "/admin/sign-in" in theirs.url

    stranger = await (await browser.new_context()).new_page()
    await sign_in(stranger, site.base, "admin", classic["email"], ADMIN_PASSWORD)
    assert await stranger.get_attribute("#sign-in-error", "data-code") == "invalid_credentials"
    await shot(stranger, "admin-sign-in-refused")
    await sign_in(stranger, site.base, "admin", classic["email"], USER_PASSWORD)
    assert stranger.url.endswith("/admin/sign-in/verify")


async def test_a_help_desk_admin_sees_billing_only_actions_disabled_and_a_forged_post_is_refused(
        browser: Browser, site: Site, org: Org) -> None:
    help_desk, _ = await site.api.admin_with_key(Role.HELP_DESK)
    target = await site.api.user()
    await site.api.admin_from_user(target, Role.MANAGER)
    page = await admin_page(browser, site, help_desk["email"], ADMIN_PASSWORD, help_desk["totp_secret"], set())
    await page.goto(f"{site.base}/admin/users/{target['id']}")
    for button in ("#action-suspend", "#action-unlock", "#action-reset-totp", "#remove-admin"):
        assert await page.locator(button).is_disabled(), button
        needs = await page.get_attribute(button, "aria-describedby")
        assert await page.inner_text(f"#{needs}") == "Needs Administrator with Billing"
    await shot(page, "admin-user-help-desk")

    status = await page.evaluate("""async (path) => {
        const csrf = document.querySelector('meta[name="csrf-token"]').content;
        const answer = await fetch(path, {method: "POST", body: new URLSearchParams({csrf})});
        return answer.status;
    }""", f"/admin/users/{target['id']}/actions/suspend")
    assert status == 403
    assert (await site.api.ok("GET", f"/api/v1/users/{target['id']}"))["state"] == "ACTIVATED"
    refusals = await site.api.ok("POST", "/insights/directory/v1/events", {
        "service": ["all"], "start_time": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
        "search_term": {"and": [{"resource.id": target["id"]}, {"success": False}]}})
    [refusal] = refusals
    assert (refusal["initiated_by"]["id"], refusal["auth_method"]) == (help_desk["id"], "admin_portal_session")


async def test_removing_the_admin_role_ends_the_admins_open_portal_session(
        browser: Browser, site: Site, org: Org) -> None:
    user = await site.api.user()
    admin = await site.api.admin_from_user(user, Role.MANAGER)
    used: set[str] = set()
    theirs = await admin_page(browser, site, user["email"], USER_PASSWORD, user["totp_secret"], used)
    await theirs.click("nav >> text=Users")
    assert theirs.url.endswith("/admin/users")

    ours = await admin_page(browser, site, org.email, org.password, org.totp_secret, set())
    await ours.click("nav >> text=Administrators")
    await ours.click(f"#remove-{admin['id']}")
    await ours.check(f"#remove-ack-{admin['id']}")
    await shot(ours, "admin-remove-warning")
    await ours.click(f"#remove-continue-{admin['id']}")
    assert "Admin access is removed" in await ours.inner_text("#flash")

    await theirs.reload()
    assert "/admin/sign-in" in theirs.url
    await shot(theirs, "admin-session-ended")
