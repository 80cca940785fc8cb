"""Duo through the Universal Prompt (``duo-universal``) against a local Duo server on loopback
that speaks the same protocol over TLS: settings by an Administrator with Billing, the prompt,
Duo's redirect back, the code exchange, and refusals."""

from __future__ import annotations

import re
import ssl
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from service import config
from service.adapters import orm
from service.bootstrap import Services
from service.domain.model import Role
from tests.conftest import Api, Org
from tests.fakes.duo_server import FakeDuo
from tests.fakes.portal import USER_PASSWORD, Portal, signin_settings
from tests.service.test_signin import generic_refusal, linked_admin, login_records

# The local Duo server signs with 40-character secrets like Duo itself (PyJWT finds them short).
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
ADMIN = "/auth/admin/login"
REDIRECT_URI = "http://localhost:8080/auth/duo/callback"


@pytest.fixture
def settings(database_url: str, tmp_path: Path, duo: FakeDuo) -> config.Settings:
    return signin_settings(database_url, tmp_path, duo_ca_bundle=str(duo.ca_path), duo_redirect_uri=REDIRECT_URI,
                           duo_api_hosts="api-*.duosecurity.com, 127.0.0.1:*",
                           signin_rate_per_account="1000", signin_rate_per_ip="1000")


async def configure(api: Api, duo: FakeDuo) -> dict[str, Any]:
    client_id, secret = duo.new_application()
    return dict(await api.ok("PUT", "/api/v1/mfa/duo", {"client_id": client_id, "client_secret": secret,
                                                         "api_host": duo.host}))


async def duo_user(api: Api, client: TestClient, duo: FakeDuo) -> dict[str, Any]:
    user, _ = await linked_admin(api)
    app = Portal(client, mobile=True)
    await app.sign_in_with_totp(user["email"], user["totp_secret"], portal="user")
    status, body = await app.post("/auth/user/mfa/duo", {"duo_username": user["email"]})
    assert status == 201, body
    return user


async def follow_prompt(duo: FakeDuo, url: str) -> tuple[str, str]:
    """The browser at Duo's prompt: Duo redirects it back with ``state`` and ``duo_code``."""
    assert url.startswith(f"https://{duo.host}/oauth/v1/authorize?")
    trust = ssl.create_default_context(cafile=str(duo.ca_path))
    async with aiohttp.ClientSession() as browser, browser.get(url, ssl=trust, allow_redirects=False) as response:
        assert response.status == 302
        location = response.headers["Location"]
    assert location.startswith(REDIRECT_URI)
    query = parse_qs(urlsplit(location).query)
    return query["state"][0], query["duo_code"][0]


async def start_duo(client: TestClient, email: str) -> tuple[Portal, str, str]:
    app = Portal(client, mobile=True)
    challenge = await app.challenge(email)
    assert "duo" in challenge["factors"]
    status, started = await app.post(f"{ADMIN}/mfa/start", {"challenge_id": challenge["challenge_id"],
                                                             "factor": "duo"})
    assert status == 200, started
    return app, challenge["challenge_id"], started["redirect_url"]


async def test_only_billing_configures_duo_and_the_secret_stays_encrypted(api: Api, services: Services, org: Org,
                                                                         duo: FakeDuo) -> None:
    _, administrator = await api.admin_with_key(Role.ADMINISTRATOR)
    client_id, secret = duo.new_application()
    body = {"client_id": client_id, "client_secret": secret, "api_host": duo.host}
    status, refused = await administrator.call("PUT", "/api/v1/mfa/duo", body)
    assert (status, refused["error"]["code"]) == (403, "permission_denied")
    assert refused["error"]["required_role"] == "Administrator with Billing"
    for change, code in [({"client_secret": "short"}, "invalid_duo_settings"),
                         ({"api_host": "https://evil/path"}, "invalid_duo_settings"),
                         ({"api_host": "10.0.0.7:8443"}, "invalid_duo_settings"),  # not a Duo host
                         ({"client_secret": "x" * 40}, "duo_check_failed")]:
        status, bad = await api.call("PUT", "/api/v1/mfa/duo", {**body, **change})
        assert (status, bad["error"]["code"]) == (400, code), change
    assert await api.ok("GET", "/api/v1/mfa/duo") == {"configured": False}
    saved = await api.ok("PUT", "/api/v1/mfa/duo", body)
    assert saved["configured"] and saved["client_id"] == client_id and "client_secret" not in saved
    async with services.session_factory() as session:
        stored = (await session.execute(sa.select(orm.duo_configs).where(
            orm.duo_configs.c.organization_id == org.id))).one()
        records = [r.body for r in await session.execute(sa.select(orm.insights_events.c.body).where(
            orm.insights_events.c.organization_id == org.id,
            orm.insights_events.c.event_type == "organization_update"))]
    assert secret not in stored.client_secret_encrypted
    assert sorted(r["success"] for r in records) == [False, True] and secret not in str(records)
    assert duo.calls.count("health_check") == 2  # the wrong secret, then the right one


async def test_duo_approves_and_the_admin_signs_in(api: Api, services: Services, org: Org, client: TestClient,
                                                   duo: FakeDuo) -> None:
    await configure(api, duo)
    user = await duo_user(api, client, duo)
    app, challenge_id, url = await start_duo(client, user["email"])
    state, code = await follow_prompt(duo, url)
    status, body = await app.call("GET", f"/auth/duo/callback?state={state}&duo_code={code}")
    assert status == 200 and body["session"]["factor"] == "duo" and body["session"]["portal"] == "admin_portal"
    records = await login_records(services, org.id, "admin_login_attempt")
    assert [(r["success"], r["mfa_meta"]["type"]) for r in records] == [(True, "duo")]
    # The JSON way: the client hands state and duo_code back itself.
    app, challenge_id, url = await start_duo(client, user["email"])
    state, code = await follow_prompt(duo, url)
    status, body = await app.post(f"{ADMIN}/mfa", {"challenge_id": challenge_id, "factor": "duo",
                                                   "state": state, "duo_code": code})
    assert status == 200 and body["session"]["factor"] == "duo"


async def test_duo_denials_and_replays_are_refused(api: Api, client: TestClient, duo: FakeDuo) -> None:
    await configure(api, duo)
    user = await duo_user(api, client, duo)
    duo.decisions[user["email"]] = "deny"
    app, challenge_id, url = await start_duo(client, user["email"])
    state, code = await follow_prompt(duo, url)
    body = {"challenge_id": challenge_id, "factor": "duo", "state": state, "duo_code": code}
    assert generic_refusal(*await app.post(f"{ADMIN}/mfa", body))
    duo.decisions[user["email"]] = "allow"
    app, challenge_id, url = await start_duo(client, user["email"])
    state, code = await follow_prompt(duo, url)
    wrong_state = {"challenge_id": challenge_id, "factor": "duo", "state": "x" * 36, "duo_code": code}
    assert generic_refusal(*await app.post(f"{ADMIN}/mfa", wrong_state))
    good = {**wrong_state, "state": state}
    assert (await app.post(f"{ADMIN}/mfa", good))[0] == 200
    app, challenge_id, url = await start_duo(client, user["email"])
    replayed = {**good, "challenge_id": challenge_id}  # an old code for a new sign-in
    assert generic_refusal(*await app.post(f"{ADMIN}/mfa", replayed))


async def test_duo_needs_the_organization_settings(api: Api, client: TestClient, duo: FakeDuo) -> None:
    user, _ = await linked_admin(api)
    app = Portal(client, mobile=True)
    await app.sign_in_with_totp(user["email"], user["totp_secret"], portal="user")
    status, body = await app.post("/auth/user/mfa/duo", {})
    assert (status, body["error"]["code"]) == (409, "duo_not_configured")
    await configure(api, duo)
    assert (await app.post("/auth/user/mfa/duo", {}))[0] == 201
    status, body = await app.post("/auth/user/mfa/duo", {})
    assert (status, body["error"]["code"]) == (409, "duo_already_enrolled")
    await duo.stop()
    app, challenge = Portal(client), await Portal(client).challenge(user["email"])
    assert "duo" in challenge["factors"]
    status, body = await app.post(f"{ADMIN}/mfa/start", {"challenge_id": challenge["challenge_id"], "factor": "duo"})
    assert (status, body["error"]["code"]) == (503, "duo_unavailable")
    assert (await api.call("DELETE", "/api/v1/mfa/duo"))[0] == 204
    assert "duo" not in (await Portal(client).challenge(user["email"]))["factors"]  # nothing to prompt with
    await configure_unreachable(api, duo)


async def configure_unreachable(api: Api, duo: FakeDuo) -> None:
    client_id, secret = duo.new_application()
    status, body = await api.call("PUT", "/api/v1/mfa/duo", {"client_id": client_id, "client_secret": secret,
                                                              "api_host": duo.host})
    assert (status, body["error"]["code"]) == (400, "duo_check_failed")


async def test_a_browser_back_from_duo_reaches_the_admin_portal_or_reads_why_not(
        api: Api, client: TestClient, duo: FakeDuo) -> None:
    await configure(api, duo)
    user = await duo_user(api, client, duo)
    html = {"Accept": "text/html,application/xhtml+xml"}

    async def through_the_pages() -> tuple[str, str]:
        page = await (await client.get("/admin/sign-in")).text()
        csrf = re.search(r'name="csrf" value="([0-9a-f]{64})"', page)
        assert csrf is not None
        form = {"email": user["email"], "password": USER_PASSWORD, "csrf": csrf.group(1)}
        assert (await client.post("/admin/sign-in", data=form, allow_redirects=False)).status == 303
        prompt = await (await client.post("/admin/sign-in/duo", data={"csrf": csrf.group(1)})).text()
        url = re.search(r'id="duo-continue" href="([^"]+)"', prompt)
        assert url is not None
        return await follow_prompt(duo, unescape(url.group(1)))

    state, code = await through_the_pages()
    back = await client.get(f"/auth/duo/callback?state={state}&duo_code={code}", headers=html,
                            allow_redirects=False)
    assert (back.status, back.headers["Location"]) == (303, "/admin/")
    assert back.cookies["adminlink_session"]["httponly"]
    assert user["email"] in await (await client.get("/admin/")).text()

    duo.decisions[user["email"]] = "deny"
    state, code = await through_the_pages()
    refused = await client.get(f"/auth/duo/callback?state={state}&duo_code={code}", headers=html)
    assert refused.status == 401 and refused.content_type == "text/html"
    assert 'data-code="invalid_credentials"' in await refused.text()
