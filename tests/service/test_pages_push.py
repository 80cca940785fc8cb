"""The push device pairing's QR code (the server's address and the one-time token), and the push
waiting page's poll, as its script calls it: pending while the phone has not answered, then
expired once the push's time is up (with a short push TTL)."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from service import config
from service.web.user_portal import qr_svg
from tests.conftest import Api, suite_settings
from tests.fakes.push_device import PushDevice

USER_PASSWORD = "a long user password 1"
PUBLIC_URL = "https://adminlink.acme.example"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> config.Settings:
    return suite_settings(database_url, tmp_path, push_ttl_seconds="1", public_url=PUBLIC_URL)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert found
    return found.group(1)


async def test_an_unanswered_push_shows_expired(client: TestClient, api: Api) -> None:
    user = await api.user(mfa=False)
    token = csrf_of(await (await client.get("/portal/sign-in")).text())
    form = {"email": user["email"], "password": USER_PASSWORD, "csrf": token}
    await client.post("/portal/sign-in", data=form)  # no factor yet: the enrollment page
    pairing = await (await client.post("/portal/mfa/push", data={"csrf": token})).text()
    enrollment = re.search(r'id="pairing-token">([^<]+)<', pairing)
    assert enrollment is not None
    await PushDevice().enroll(client, enrollment.group(1))
    await client.post("/portal/sign-out", data={"csrf": token})

    await client.post("/portal/sign-in", data=form)
    sent = await client.post("/portal/sign-in/push", data={"csrf": token}, allow_redirects=False)
    assert (sent.status, sent.headers["Location"]) == (303, "/portal/sign-in/push")
    poll = {"headers": {"X-CSRF-Token": token}, "json": {}}
    assert (await (await client.post("/portal/sign-in/push/status", **poll)).json())["status"] == "pending"
    await asyncio.sleep(1.2)
    expired = await (await client.post("/portal/sign-in/push/status", **poll)).json()
    assert expired["status"] == "expired" and "not answered in time" in expired["message"]


async def test_the_pairing_qr_code_carries_the_server_address_and_the_token(client: TestClient, api: Api) -> None:
    user = await api.user(mfa=False)
    token = csrf_of(await (await client.get("/portal/sign-in")).text())
    await client.post("/portal/sign-in", data={"email": user["email"], "password": USER_PASSWORD, "csrf": token})
    page = await (await client.post("/portal/mfa/push", data={"csrf": token})).text()
    enrollment = re.search(r'id="pairing-token">([^<]+)<', page)
    organization = re.search(r"Organization: <code>([^<]+)<", page)
    assert enrollment is not None and organization is not None
    payload = json.dumps({"type": "adminlink-push-pairing", "version": 1, "server": PUBLIC_URL,
                          "organization_id": organization.group(1), "enrollment_token": enrollment.group(1)},
                         separators=(",", ":"))
    assert str(qr_svg(payload)) in page  # the QR code drawn is the one of this payload
    assert f'id="pairing-server">{PUBLIC_URL}<' in page
    assert await PushDevice().pair(client, payload) == PUBLIC_URL  # the device enrolls from it


async def test_the_api_answers_the_pairing_payload_too(client: TestClient, api: Api) -> None:
    user = await api.user(mfa=False)
    signed_in = await client.post("/auth/user/login", json={"email": user["email"], "password": USER_PASSWORD})
    assert signed_in.status == 200
    response = await client.post("/auth/user/mfa/push", json={})
    body = await response.json()
    assert response.status == 201 and body["server"] == PUBLIC_URL
    assert json.loads(body["pairing_payload"]) == {
        "type": "adminlink-push-pairing", "version": 1, "server": PUBLIC_URL,
        "organization_id": body["organization_id"], "enrollment_token": body["enrollment_token"]}
    assert await PushDevice().pair(client, body["pairing_payload"]) == PUBLIC_URL
