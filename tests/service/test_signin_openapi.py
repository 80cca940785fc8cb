"""The sign-in part of the OpenAPI document tells the truth: every sign-in route is in it, every
refusal code the sign-in raises is named where it can occur, and real answers match the schemas."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyotp
import pytest
from aiohttp.test_utils import TestClient
from openapi_schema_validator import OAS31Validator

from service import config
from service.api import openapi, signin
from service.app import create_app
from service.bootstrap import Services
from tests.conftest import Api
from tests.fakes.portal import Portal, signin_settings
from tests.fakes.push_device import PushDevice
from tests.fakes.webauthn_authenticator import SoftAuthenticator
from tests.service.test_signin import linked_admin

ROOT = Path(__file__).resolve().parents[2]
SOURCES = [*sorted((ROOT / "service/signin").glob("*.py")), ROOT / "service/api/signin.py"]
RAISED = re.compile(
    r'(?:Conflict|InvalidRequest|NotFound|Forbidden|Unauthorized|Unavailable|bad_request)\(\s*"([a-z_]+)"')
SIGNIN_PART = json.loads((ROOT / "service/api/openapi/signin.json").read_text())


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> config.Settings:
    return signin_settings(database_url, tmp_path)


def documented(method: str, path: str, status: int, body: Any) -> None:
    responses = openapi.document()["paths"][path][method.lower()]["responses"]
    assert str(status) in responses, f"{method} {path} answered {status}, not documented: {body}"
    content = responses[str(status)].get("content")
    if content is None:
        assert body is None
        return
    schema = {**content["application/json"]["schema"], "components": openapi.document()["components"]}
    OAS31Validator(schema).validate(body)
    if status >= 400:
        assert f"`{body['error']['code']}`" in responses[str(status)]["description"], (method, path, body)


async def exchange(app: Portal, method: str, template: str, body: Any = None, expect: int = 200,
                   **ids: str) -> Any:
    status, data = await app.call(method, template.format(**ids), body)
    assert status == expect, (method, template, status, data)
    documented(method, template, status, data)
    return data


def test_every_code_the_sign_in_raises_is_documented() -> None:
    raised = {code for source in SOURCES for code in RAISED.findall(source.read_text())}
    assert {"invalid_credentials", "go_not_allowed", "push_already_pending", "use_user_portal"} <= raised
    text = json.dumps(SIGNIN_PART)
    assert sorted(code for code in raised if f"`{code}`" not in text) == []


async def test_every_sign_in_route_is_documented(services: Services) -> None:
    app = create_app(services)
    served = {(r.method.lower(), r.resource.canonical) for r in app.router.routes()
              if r.resource is not None and r.method != "HEAD" and r.handler.__module__ == signin.__name__}
    documented_ops = {(m, p) for p, item in SIGNIN_PART["paths"].items() for m in item}
    assert served == documented_ops


async def test_answers_match_the_schemas(api: Api, client: TestClient) -> None:
    user, _ = await linked_admin(api)
    app = Portal(client, mobile=True)
    challenge = await exchange(app, "POST", "/auth/admin/login", {"email": user["email"],
                                                                  "password": "a long user password 1"})
    await exchange(app, "POST", "/auth/admin/login", {"email": user["email"], "password": "nope"}, 401)
    await exchange(app, "POST", "/auth/admin/login/mfa/start", {"challenge_id": challenge["challenge_id"],
                                                                "factor": "go"}, 403)
    await exchange(app, "POST", "/auth/admin/login/mfa", {"challenge_id": "x", "factor": "totp", "code": "1"}, 401)
    user_challenge = await exchange(app, "POST", "/auth/user/login", {"email": user["email"],
                                                                      "password": "a long user password 1"})
    await exchange(app, "POST", "/auth/user/login/mfa", {"challenge_id": user_challenge["challenge_id"],
                                                         "factor": "totp",
                                                         "code": pyotp.TOTP(user["totp_secret"]).now()})
    user_portal = Portal(client, mobile=True)
    user_portal.token = app.token
    await exchange(app, "GET", "/auth/user/mfa")
    await exchange(app, "POST", "/auth/user/mfa/totp", expect=409)
    options = await exchange(app, "POST", "/auth/user/mfa/webauthn/options", {"type": "webauthn_device"})
    laptop = SoftAuthenticator("platform")
    await exchange(app, "POST", "/auth/user/mfa/webauthn", {"credential": laptop.create(options["options"])},
                   expect=201)
    enrollment = await exchange(app, "POST", "/auth/user/mfa/push", expect=201)
    device = PushDevice("EdDSA")
    await device.enroll(client, enrollment["enrollment_token"])
    await exchange(app, "POST", "/auth/user/mfa/duo", {}, 409)
    step_up = await exchange(app, "POST", "/auth/user/launch-admin-portal", {})
    started = await exchange(app, "POST", "/auth/user/launch-admin-portal/mfa/start",
                             {"challenge_id": step_up["challenge_id"], "factor": "push"})
    pending = await exchange(app, "POST", "/auth/user/launch-admin-portal/mfa",
                             {"challenge_id": step_up["challenge_id"], "factor": "push",
                              "push_id": started["push_id"]}, 202)
    inbox = await exchange(Portal(client), "POST", "/auth/push/devices/{device_id}/inbox", {
        "organization_id": device.organization_id, "timestamp": 0, "signature": "x"}, 400,
        device_id=device.device_id or "")
    assert pending["status"] == "pending" and inbox["error"]["code"] == "stale_timestamp"
    waiting = await device.inbox(client)
    assert waiting is not None
    await exchange(Portal(client), "POST", "/auth/push/{push_id}/decision", {
        "device_id": device.device_id, "decision": "approve",
        "signature": device.sign(f"adminlink-push-v1\napprove\n{waiting['push_id']}\n{waiting['nonce']}")},
        push_id=waiting["push_id"])
    await exchange(app, "POST", "/auth/user/launch-admin-portal/mfa", {
        "challenge_id": step_up["challenge_id"], "factor": "push", "push_id": started["push_id"]})
    go = await exchange(Portal(client), "POST", "/auth/user/go/options", {})
    await exchange(Portal(client), "POST", "/auth/user/go", {"challenge_id": go["challenge_id"],
                                                             "credential": laptop.get(go["options"])})
    await exchange(user_portal, "POST", "/auth/user/password", {"old_password": "a long user password 1",
                                                        "new_password": "short"}, 400)
    await exchange(Portal(client), "GET", "/auth/duo/callback", expect=400)
    admin_api = Portal(client)
    status, body = await admin_api.call("GET", "/api/v1/mfa/duo", None, **{"x-api-key": api.key})
    assert status == 200
    documented("GET", "/api/v1/mfa/duo", status, body)
    status, body = await admin_api.call("PUT", "/api/v1/mfa/duo", {"client_id": "short", "client_secret": "x",
                                                                   "api_host": "h"}, **{"x-api-key": api.key})
    documented("PUT", "/api/v1/mfa/duo", status, body)
    assert body["error"]["code"] == "invalid_duo_settings"
