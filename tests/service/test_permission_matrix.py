"""Every cell of the seed's *Understanding Permissions* table, over HTTP: action x actor role x
target user with / without an admin role. Denials are 403 naming the role needed."""

from __future__ import annotations

from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from service.domain.model import Role
from tests.conftest import Api

SSH_KEY = Ed25519PrivateKey.generate().public_key().public_bytes(
    serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()
USER_SCOPED = {Role.HELP_DESK, Role.MANAGER, Role.ADMINISTRATOR, Role.BILLING}

# name -> (method, path, body). {user} is the target user's id, {admin} its admin identity's id.
ACTIONS: dict[str, tuple[str, str, Any]] = {
    "totp require": ("POST", "/api/v1/users/{user}/mfa/totp", None),
    "totp reset": ("POST", "/api/v1/users/{user}/mfa/totp/reset", None),
    "totp remove": ("DELETE", "/api/v1/users/{user}/mfa/totp", None),
    "webauthn delete": ("DELETE", "/api/v1/users/{user}/mfa/webauthn/none", None),
    "protect delete": ("DELETE", "/api/v1/users/{user}/mfa/push/none", None),
    "ssh key create": ("POST", "/api/v1/users/{user}/ssh-keys", {"name": "laptop", "public_key": SSH_KEY}),
    "ssh key delete": ("DELETE", "/api/v1/users/{user}/ssh-keys/none", None),
    "delete user": ("DELETE", "/api/v1/users/{user}", None),
    "remove mfa requirement": ("DELETE", "/api/v1/users/{user}/mfa/required", None),
    "require mfa": ("PUT", "/api/v1/users/{user}/mfa/required", None),
    "force password reset": ("POST", "/api/v1/users/{user}/expire-password", None),
    "set password": ("PUT", "/api/v1/users/{user}/password", {"password": "another long password"}),
    "password authority": ("PUT", "/api/v1/users/{user}/password-authority", {"authority": "scim"}),
    "suspend": ("POST", "/api/v1/users/{user}/suspend", None),
    "activate": ("POST", "/api/v1/users/{user}/activate", None),
    "unlock": ("POST", "/api/v1/users/{user}/unlock", None),
    "other user operation": ("PATCH", "/api/v1/users/{user}", {"firstname": "Renamed"}),
    "assign admin role": ("POST", "/api/v1/admins/from-user", {"user_id": "{user}", "role": "Read Only"}),
    "remove admin access": ("POST", "/api/v1/admins/{admin}/remove-access", {"acknowledge": True}),
    "read": ("GET", "/api/v1/users/{user}", None),
}


def seed_allows(action: str, role: Role, target_has_admin_role: bool) -> bool:
    if action == "read":
        return True
    if action in ("assign admin role", "remove admin access") or target_has_admin_role:
        return role == Role.BILLING
    return role in USER_SCOPED


CELLS = [
    (action, role, has_admin)
    for action in ACTIONS
    for role in Role
    for has_admin in (False, True)
    if not (action == "remove admin access" and not has_admin)  # no admin identity to remove
]


@pytest.fixture
async def actors(api: Api) -> dict[Role, Api]:
    return {role: (await api.admin_with_key(role))[1] for role in Role}


def fill(template: Any, ids: dict[str, str]) -> Any:
    if isinstance(template, str):
        return template.format(**ids)
    if isinstance(template, dict):
        return {k: fill(v, ids) for k, v in template.items()}
    return template


async def test_every_cell_over_http(api: Api, actors: dict[Role, Api]) -> None:
    checked = 0
    for action, role, has_admin in CELLS:
        target = await api.user()
        ids = {"user": target["id"], "admin": ""}
        if has_admin:
            ids["admin"] = (await api.admin_from_user(target, Role.READ_ONLY))["id"]
        method, path, body = ACTIONS[action]
        status, answer = await actors[role].call(method, fill(path, ids), fill(body, ids))
        cell = f"{action} by {role.value} on a user {'with' if has_admin else 'without'} an admin role"
        if seed_allows(action, role, has_admin):
            assert status != 403, (cell, answer)
            assert status < 400 or answer["error"]["code"].endswith("not_found") or status == 409, (cell, answer)
        else:
            assert status == 403, (cell, status, answer)
            needed = "Administrator with Billing" if has_admin or "admin" in action else "Help Desk"
            assert answer["error"] == {"code": "permission_denied", "message": answer["error"]["message"],
                                       "required_role": needed}, cell
            shown = await api.ok("GET", f"/api/v1/users/{target['id']}")  # a denial changed nothing
            assert shown["state"] == target["state"] and shown["firstname"] == target["firstname"], cell
            assert shown["mfa"] == {**target["mfa"], "factors": ["totp"], "configured": True}, cell
        checked += 1
    assert checked == len(CELLS) == 20 * 10 - 5
