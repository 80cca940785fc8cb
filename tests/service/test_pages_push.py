"""The push waiting page's poll, as its script calls it: pending while the phone has not
answered, then expired once the push's time is up (with a short push TTL)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from service import config
from tests.conftest import Api, suite_settings
from tests.fakes.push_device import PushDevice

USER_PASSWORD = "a long user password 1"


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> config.Settings:
    return suite_settings(database_url, tmp_path, push_ttl_seconds="1")


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
