"""Sign-in refusals as the portals' pages say them: in words a person understands, tied to the
form's fields, with the API's code kept in ``data-code``."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from service import config
from service.adapters import orm
from service.bootstrap import Services
from tests.conftest import Api, suite_settings

USER_PASSWORD = "a long user password 1"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> config.Settings:
    return suite_settings(database_url, tmp_path, signin_rate_per_account="3")


async def attempt(client: TestClient, portal: str, email: str, password: str) -> tuple[int, str, str]:
    page = await (await client.get(f"/{portal}/sign-in")).text()
    csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
    assert csrf is not None
    answer = await client.post(f"/{portal}/sign-in", data={"email": email, "password": password,
                                                           "csrf": csrf.group(1)})
    text = await answer.text()
    code = re.search(r'data-code="([a-z_]+)"', text)
    return answer.status, code.group(1) if code else "", text


async def test_a_wrong_password_then_too_many_attempts_are_said_in_words(client: TestClient, api: Api) -> None:
    user = await api.user()
    for _ in range(3):
        status, code, text = await attempt(client, "admin", user["email"], "not the password at all")
        assert (status, code) == (401, "invalid_credentials")
        assert "did not match" in text and 'aria-describedby="sign-in-error"' in text
    status, code, text = await attempt(client, "admin", user["email"], USER_PASSWORD)
    assert (status, code) == (429, "rate_limited")
    assert re.search(r"Too many attempts\. Wait \d+ seconds, then try again\.", text)


async def test_a_user_without_an_admin_role_is_sent_to_the_user_portal(client: TestClient, api: Api) -> None:
    user = await api.user()
    status, code, text = await attempt(client, "admin", user["email"], USER_PASSWORD)
    assert (status, code) == (403, "not_an_admin")
    assert "Use the user portal instead" in text and 'href="/portal/sign-in"' in text


async def test_a_locked_user_is_told_to_ask_an_administrator(client: TestClient, api: Api,
                                                            services: Services) -> None:
    user = await api.user()
    async with services.session_factory() as session, session.begin():
        await session.execute(sa.update(orm.users).where(orm.users.c.id == user["id"]).values(account_locked=True))
    status, code, text = await attempt(client, "portal", user["email"], USER_PASSWORD)
    assert (status, code) == (403, "user_locked")
    assert "locked after too many failed attempts. Ask an administrator to unlock it." in text


@pytest.mark.parametrize(("content_type", "body", "code"), [
    ("multipart/form-data", b"email=a", "invalid_form"),  # no boundary
    ("application/x-www-form-urlencoded", b"email=\xff\xfe", "invalid_encoding"),
])
async def test_a_form_body_that_cannot_be_read_is_a_400_page(client: TestClient, content_type: str, body: bytes,
                                                             code: str) -> None:
    for path in ("/admin/sign-in", "/portal/sign-in", "/admin/sign-out"):
        answer = await client.post(path, data=body, headers={"Content-Type": content_type})
        # Browsers never send such a body: the refusal is the API's JSON error, with its stable code.
        assert (answer.status, (await answer.json())["error"]["code"]) == (400, code), path


async def test_a_nul_character_in_a_signed_form_is_a_400_before_any_lookup(client: TestClient, api: Api) -> None:
    user = await api.user()
    for portal in ("admin", "portal"):
        for email, password in ((user["email"] + "\x00", USER_PASSWORD), (user["email"], "pass\x00word")):
            status, _, text = await attempt(client, portal, email, password)
            assert status == 400 and '"invalid_encoding"' in text, (portal, status, text[:200])
