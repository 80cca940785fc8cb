"""Shared by the SCIM tests (no tests of its own): a SCIM integration's token and SCIM requests."""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from service.adapters import orm
from service.bootstrap import Services
from service.domain.model import Role, new_id
from tests.conftest import Api

SCIM_JSON = "application/scim+json"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"
ENTERPRISE = "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User"
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"


class Scim:
    """Requests to /scim/v2 with one integration's bearer token."""

    def __init__(self, client: TestClient, token: str, integration: dict[str, Any]) -> None:
        self.client = client
        self.token = token
        self.integration = integration

    async def call(self, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
        sent = {"Authorization": f"Bearer {self.token}", **headers}
        if body is not None:
            sent["Content-Type"] = SCIM_JSON
        response = await self.client.request(method, "/scim/v2" + path, json=body, headers=sent)
        text = await response.text()
        if text:
            assert response.content_type == SCIM_JSON, (response.status, text)
        return response.status, (json.loads(text) if text else None)

    async def ok(self, method: str, path: str, body: Any = None, **headers: str) -> Any:
        status, data = await self.call(method, path, body, **headers)
        assert status < 300, (method, path, status, data)
        return data

    async def create_user(self, user_name: str | None = None, **fields: Any) -> dict[str, Any]:
        user_name = user_name or f"u-{new_id()[:10]}@example.com"
        body = {"schemas": [USER_SCHEMA], "userName": user_name,
                "emails": [{"value": user_name if "@" in user_name else f"{user_name}@example.com",
                            "type": "work", "primary": True}],
                "name": {"givenName": "Test", "familyName": "User"}, "active": True, **fields}
        status, data = await self.call("POST", "/Users", body)
        assert status == 201, data
        return dict(data)


async def scim_integration(api: Api, role: Role = Role.BILLING, delete_mode: str = "suspend",
                           provider: str = "generic") -> Scim:
    integration = await api.ok("POST", "/api/v1/integrations", {
        "kind": "scim", "name": f"scim-{new_id()[:8]}", "role": role.value, "delete_mode": delete_mode,
        "provider": provider})
    return Scim(api.client, integration["token"], integration)


async def records(services: Services, org_id: str) -> list[dict[str, Any]]:
    table = orm.insights_events
    async with services.session_factory() as session:
        rows = await session.execute(
            sa.select(table.c.body).where(table.c.organization_id == org_id).order_by(table.c.timestamp))
        return [r.body for r in rows]
