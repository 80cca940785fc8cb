"""Every email adminlink sends, checked word for word against the event that caused it: each
event has its own words, and no email tells of something that did not happen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from service import config, notifications
from service.domain.model import Role
from tests.conftest import Api, Org
from tests.fakes.portal import Portal, signin_settings

# What each event's email says, written out here independently of service/notifications.py.
EXPECTED = {
    "admin_role_assigned": (
        "You have been given an admin role",
        "Hello {name},\n\nYour user account {email} has been given the admin role \"{role}\".\n"
        "Sign in to the Admin Portal with your user credentials and your MFA factors.\n",
    ),
    "admin_linked_to_user": (
        "Your admin account now signs in with your user account",
        "Hello {name},\n\nYour admin account, with the admin role \"{role}\", has been linked to your "
        "user account {email}.\n"
        "Sign in to the Admin Portal with your user credentials and your MFA factors.\n"
        "The admin account's own password and TOTP have been deleted and no longer work.\n",
    ),
    "admin_role_removed": (
        "Your admin role has been removed",
        "Hello {name},\n\nThe admin role \"{role}\" of your user account {email} has been removed.\n"
        "Your user account is unchanged; you can no longer sign in to the Admin Portal.\n",
    ),
    "user_with_admin_role_deleted": (
        "Your user account and its admin role have been deleted",
        "Hello {name},\n\nYour user account {email} has been deleted, and with it its admin role \"{role}\".\n"
        "You can no longer sign in to the User Portal or the Admin Portal.\n",
    ),
    "last_billing_admin_refused": (
        "A change was refused: it would remove the last Administrator with Billing",
        "Hello,\n\n{actor} tried to {attempt} {target}. It was refused because the organization would be "
        "left without {left_without}.\n",
    ),
    "last_billing_admin_lockout_refused": (
        "A lockout was refused: it would lock out the last Administrator with Billing",
        "Hello,\n\nFailed sign-ins to {target} reached the lockout threshold. The account was not locked "
        "because the organization would be left without an active Administrator with Billing; the "
        "sign-in rate limits still slow further attempts down.\n"
        "If these sign-ins were not made by {target}, change that account's password.\n",
    ),
}


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> config.Settings:
    # The lockout test signs in wrongly many times: the rate limits stay out of its way.
    return signin_settings(database_url, tmp_path, signin_rate_per_account="1000", signin_rate_per_ip="1000")


def expected(template: str, to: str, **context: str) -> dict[str, str]:
    subject, body = EXPECTED[template]
    return {"to": to, "subject": subject, "body": body.format(**context)}


async def outbox(api: Api) -> list[dict[str, str]]:
    """The organization's emails, oldest first, as recipient, subject and body."""
    mails = (await api.ok("GET", "/api/v1/mail/outbox"))["results"]
    return [{"to": m["to"], "subject": m["subject"], "body": m["body"]} for m in reversed(mails)]


async def new_mails(api: Api, seen: int) -> list[dict[str, str]]:
    return (await outbox(api))[seen:]


def test_every_template_has_its_expected_words() -> None:
    assert set(notifications.TEMPLATES) == set(EXPECTED)
    subjects = [subject for subject, _ in notifications.TEMPLATES.values()]
    assert len(set(subjects)) == len(subjects)  # one event, one subject


async def pat(api: Api) -> dict[str, Any]:
    return await api.user(firstname="Pat", lastname="Lee")


async def test_create_admin_from_user_tells_of_the_new_role(api: Api) -> None:
    user = await pat(api)
    await api.admin_from_user(user, Role.MANAGER)
    assert await new_mails(api, 0) == [expected("admin_role_assigned", user["email"], name="Pat Lee",
                                                email=user["email"], role="Manager")]


async def test_link_tells_that_the_admins_own_credentials_are_gone(api: Api) -> None:
    user = await pat(api)
    admin, _ = await api.admin_with_key(Role.HELP_DESK, email=user["email"])
    await api.ok("POST", f"/api/v1/admins/{admin['id']}/link-user", {"acknowledge": True})
    assert await new_mails(api, 0) == [expected("admin_linked_to_user", user["email"], name="Pat Lee",
                                                email=user["email"], role="Help Desk")]


async def test_remove_access_tells_that_the_user_account_is_kept(api: Api) -> None:
    user = await pat(api)
    admin = await api.admin_from_user(user, Role.ADMINISTRATOR)
    seen = len(await outbox(api))
    await api.ok("POST", f"/api/v1/admins/{admin['id']}/remove-access", {"acknowledge": True})
    assert await new_mails(api, seen) == [expected("admin_role_removed", user["email"], name="Pat Lee",
                                                   email=user["email"], role="Administrator")]


@pytest.mark.parametrize("bulk", [False, True], ids=["delete", "bulk-delete"])
async def test_deleting_a_user_with_an_admin_role_tells_of_the_deletion(api: Api, bulk: bool) -> None:
    user = await pat(api)
    await api.admin_from_user(user, Role.MANAGER)
    plain = await api.user()  # deleted alongside in bulk: a user without an admin role gets no email
    seen = len(await outbox(api))
    if bulk:
        await api.ok("POST", "/api/v1/users/bulk-delete", {"ids": [user["id"], plain["id"]], "confirm_count": 2})
    else:
        await api.ok("DELETE", f"/api/v1/users/{user['id']}")
    mails = await new_mails(api, seen)
    assert mails == [expected("user_with_admin_role_deleted", user["email"], name="Pat Lee",
                              email=user["email"], role="Manager")]
    assert "unchanged" not in mails[0]["body"]


async def test_a_refused_change_to_the_last_billing_admin_tells_the_other_admins(api: Api, org: Org) -> None:
    other, _ = await api.admin_with_key(Role.MANAGER)
    seen = len(await outbox(api))
    status, body = await api.call("PATCH", f"/api/v1/admins/{org.admin_id}", {"role": "Administrator"})
    assert (status, body["error"]["code"]) == (409, "last_billing_admin")
    assert await new_mails(api, seen) == [expected(
        "last_billing_admin_refused", other["email"], actor=org.email,
        attempt="change the role to Administrator of", target=org.email,
        left_without="an active Administrator with Billing")]


async def test_a_refused_lockout_of_the_last_billing_admin_names_no_one_as_its_author(
        api: Api, org: Org, client: TestClient) -> None:
    user = await pat(api)
    billing = await api.admin_from_user(user, Role.BILLING)
    boss = Api(client, (await api.ok("POST", f"/api/v1/admins/{billing['id']}/api-keys"))["key"])
    await boss.ok("POST", f"/api/v1/admins/{org.admin_id}/remove-access", {"acknowledge": True})
    other, _ = await boss.admin_with_key(Role.MANAGER)
    seen = len(await outbox(boss))
    portal = Portal(client, mobile=True)
    # Only a known device's failures count toward the lock (smart lockout): sign in once first.
    await portal.sign_in_with_totp(user["email"], user["totp_secret"], portal="user")
    for _ in range(10):  # the default lockout threshold
        status, _ = await portal.login(user["email"], "wrong password entirely")
        assert status == 401
    assert await new_mails(boss, seen) == [expected("last_billing_admin_lockout_refused", other["email"],
                                                    target=user["email"])]
