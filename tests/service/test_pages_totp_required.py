"""TOTP an administrator requires: the user is sent to its enrollment after signing in to the user
portal, with a sentence saying why, and can use nothing else (but sign out) until a code is
confirmed."""

from __future__ import annotations

import re

import pyotp
from aiohttp.test_utils import TestClient

from tests.conftest import Api
from tests.service.test_pages import USER_PASSWORD, csrf_of

REQUIRED = "Your administrator requires an authenticator app (TOTP) for your account."


async def sign_in(client: TestClient, email: str) -> str:
    token = csrf_of(await (await client.get("/portal/sign-in")).text())
    signed_in = await client.post("/portal/sign-in", data={"identifier": email, "password": USER_PASSWORD,
                                                           "csrf": token}, allow_redirects=False)
    assert signed_in.status == 303
    return token


async def location(client: TestClient, method: str, path: str, **kwargs: object) -> str:
    response = await client.request(method, path, allow_redirects=False, **kwargs)  # type: ignore[arg-type]
    assert response.status == 303, (path, response.status)
    return response.headers["Location"]


async def test_a_required_totp_is_enrolled_before_anything_else(client: TestClient, api: Api) -> None:
    user = await api.user(mfa=False)
    await api.ok("POST", f"/api/v1/users/{user['id']}/mfa/totp")  # the administrator requires it
    token = await sign_in(client, user["email"])
    for path in ("/portal/", "/portal/mfa", "/portal/password"):
        assert await location(client, "GET", path) == "/portal/mfa/totp"
    assert await location(client, "POST", "/portal/launch-admin", data={"csrf": token}) == "/portal/mfa/totp"
    assert await location(client, "POST", "/portal/mfa/push", data={"csrf": token}) == "/portal/mfa/totp"
    script = await client.post("/portal/mfa/webauthn/options", json={"type": "security_key"},
                               headers={"X-CSRF-Token": token})
    assert (script.status, (await script.json())["code"]) == (403, "totp_enrollment_required")

    page = await client.get("/portal/mfa/totp")
    text = await page.text()
    assert page.status == 200 and REQUIRED in text and 'id="add-totp"' in text
    started = await (await client.post("/portal/mfa/totp", data={"csrf": token})).text()
    found = re.search(r'id="totp-secret">([A-Z2-7]+)<', started)
    assert found and REQUIRED in started
    wrong = await client.post("/portal/mfa/totp/confirm", data={"csrf": token, "code": "000000"})
    assert wrong.status == 400 and REQUIRED in await wrong.text()
    code = pyotp.TOTP(found.group(1)).now()
    assert await location(client, "POST", "/portal/mfa/totp/confirm",
                          data={"csrf": token, "code": code}) == "/portal/mfa?done=totp"
    # Satisfied: the portal is open, and the enrollment page no longer asks.
    home = await client.get("/portal/", allow_redirects=False)
    assert home.status == 200 and REQUIRED not in await home.text()
    assert await location(client, "GET", "/portal/mfa/totp") == "/portal/mfa"
    shown = await api.ok("GET", f"/api/v1/users/{user['id']}")
    assert shown["mfa"]["required"] is True and shown["mfa"]["factors"] == ["totp"]


async def test_a_user_with_a_required_totp_can_sign_out(client: TestClient, api: Api) -> None:
    user = await api.user(mfa=False)
    await api.ok("POST", f"/api/v1/users/{user['id']}/mfa/totp")
    token = await sign_in(client, user["email"])
    assert await location(client, "POST", "/portal/sign-out", data={"csrf": token}) == "/portal/sign-in"
    assert await location(client, "GET", "/portal/mfa/totp") == "/portal/sign-in"


async def test_without_a_requirement_the_portal_is_open(client: TestClient, api: Api) -> None:
    user = await api.user(mfa=False)
    await sign_in(client, user["email"])
    home = await client.get("/portal/", allow_redirects=False)
    assert home.status == 200 and REQUIRED not in await home.text()
    assert await location(client, "GET", "/portal/mfa/totp") == "/portal/mfa"
