"""Sign-in with a username or an email, on the API and on the portals' pages: the username finds
the same identity as the email, the refusals are the same whether the account exists or not, and
the username and the email of one account share its limits and its unfamiliar lane."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from service import config
from service.bootstrap import Services
from tests.conftest import Api, Org, bootstrap_org
from tests.fakes.portal import USER_PASSWORD, Portal, next_code, signin_settings
from tests.service.test_pages import csrf_of
from tests.service.test_signin import generic_refusal, linked_admin, unfamiliar_failures

WRONG = "wrong password entirely"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> config.Settings:
    return signin_settings(database_url, tmp_path, signin_rate_per_account="3", signin_rate_per_ip="1000")


async def test_a_linked_admin_signs_in_to_both_portals_with_the_username(api: Api, client: TestClient) -> None:
    user, admin = await linked_admin(api)
    portal = Portal(client, mobile=True)
    status, body = await portal.post("/auth/user/login", {"identifier": user["username"].upper(),
                                                          "password": USER_PASSWORD})
    assert (status, body["status"]) == (200, "mfa_required"), body
    status, body = await portal.totp("/auth/user/login", body["challenge_id"], user["totp_secret"])
    assert (status, body["session"]["email"]) == (200, user["email"]), body
    # The field clients already send, ``email``, takes a username too.
    session = await Portal(client, mobile=True).sign_in_with_totp(user["username"], user["totp_secret"],
                                                                  code=next_code(user["totp_secret"]))
    assert (session["kind"], session["id"]) == ("admin", admin["id"])


async def test_a_username_is_refused_like_an_email_whether_or_not_it_exists(api: Api, client: TestClient,
                                                                            org: Org) -> None:
    user = await api.user()
    portal = Portal(client, mobile=True)
    for portal_name in ("user", "admin"):
        known = await portal.login(user["username"], WRONG, portal=portal_name)
        unknown = await portal.login("nobody-by-that-name", WRONG, portal=portal_name)
        assert generic_refusal(*known) and known == unknown
    # A classic admin has no username: only its email finds it.
    classic_local_part = org.email.split("@")[0]
    assert generic_refusal(*await portal.login(classic_local_part, "a password", portal="admin"))


async def test_the_username_and_the_email_share_the_account_limit(api: Api, client: TestClient) -> None:
    user = await api.user()
    portal = Portal(client, mobile=True)
    for typed in (user["username"], user["email"], user["username"].upper()):
        assert generic_refusal(*await portal.login(typed, WRONG, portal="user"))
    status, body = await portal.login(user["email"], WRONG, portal="user")
    assert (status, body["error"]["code"]) == (429, "rate_limited")


async def test_failures_typed_as_the_username_count_in_the_emails_unfamiliar_lane(
        api: Api, client: TestClient, services: Services) -> None:
    user = await api.user()
    portal = Portal(client, mobile=True, useragent="attacker/1.0")
    for _ in range(2):
        assert generic_refusal(*await portal.login(user["username"], WRONG, portal="admin"))
    assert await unfamiliar_failures(services, user["email"]) == 2
    assert await unfamiliar_failures(services, user["username"]) == 0


async def test_the_login_body_takes_identifier_or_email_not_both(client: TestClient) -> None:
    both = await client.post("/auth/user/login", json={"identifier": "a", "email": "a@acme.test", "password": "x"})
    assert (both.status, (await both.json())["error"]["code"]) == (400, "invalid_field")
    neither = await client.post("/auth/user/login", json={"password": "x"})
    assert (neither.status, (await neither.json())["error"]["code"]) == (400, "missing_field")
    wrong_type = await client.post("/auth/user/login", json={"identifier": 5, "password": "x"})
    assert (wrong_type.status, (await wrong_type.json())["error"]["code"]) == (400, "invalid_field")


async def test_the_sign_in_pages_take_a_username(api: Api, client: TestClient) -> None:
    user, _ = await linked_admin(api)
    for portal in ("portal", "admin"):
        page = await (await client.get(f"/{portal}/sign-in")).text()
        assert '<label for="identifier">Username or email</label>' in page
        response = await client.post(f"/{portal}/sign-in", data={
            "identifier": user["username"], "password": USER_PASSWORD, "csrf": csrf_of(page)}, allow_redirects=False)
        assert (response.status, response.headers["Location"]) == (303, f"/{portal}/sign-in/verify")


async def test_a_username_in_several_organizations_needs_the_organization(
        api: Api, client: TestClient, services: Services, org: Org) -> None:
    other = Api(client, (await bootstrap_org(services, "Other")).key)
    mine = await api.user(username="pat")
    await other.user(username="pat")
    portal = Portal(client, mobile=True)
    assert generic_refusal(*await portal.login("pat", USER_PASSWORD, portal="user"))
    status, body = await portal.login("pat", USER_PASSWORD, portal="user", organization_id=org.id)
    assert (status, body["status"]) == (200, "mfa_required"), body
    assert mine["username"] == "pat"


async def test_an_email_is_looked_up_before_a_username_that_looks_like_it(api: Api, client: TestClient) -> None:
    owner = await api.user()
    await api.user(username=owner["email"])  # another user whose username is the first one's email
    portal = Portal(client, mobile=True)
    session = await portal.sign_in_with_totp(owner["email"], owner["totp_secret"], portal="user")
    assert session["id"] == owner["id"]
