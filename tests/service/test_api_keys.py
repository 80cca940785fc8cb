"""API keys: who may use one, and what using it records."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from service.adapters import orm
from service.adapters.crypto import token_hash
from service.bootstrap import Services
from service.domain.model import Role
from tests.conftest import Api


async def linked_admin_key(api: Api) -> tuple[dict[str, Any], dict[str, Any], Api]:
    """A user given an Administrator role with API access, and an API key of that admin's."""
    user = await api.user()
    admin = await api.admin_from_user(user, Role.ADMINISTRATOR)
    key = (await api.ok("POST", f"/api/v1/admins/{admin['id']}/api-keys"))["key"]
    return user, admin, Api(api.client, key)


async def refused(caller: Api) -> str:
    status, body = await caller.get("/api/v1/users")
    assert status == 401, body
    assert body["error"]["code"] == "unauthorized"
    return str(body["error"]["message"])


async def set_key(services: Services, key: str, **values: Any) -> None:
    async with services.session_factory() as session, session.begin():
        await session.execute(sa.update(orm.api_keys).where(orm.api_keys.c.key_hash == token_hash(key))
                              .values(**values))


async def key_row(services: Services, key: str) -> Any:
    async with services.session_factory() as session:
        return (await session.execute(sa.select(orm.api_keys).where(
            orm.api_keys.c.key_hash == token_hash(key)))).one()


async def test_a_key_acts_as_its_admin(api: Api) -> None:
    _, admin, caller = await linked_admin_key(api)
    created = await caller.ok("POST", "/api/v1/users", {"email": "by-key@acme.test", "username": "by-key"})
    events = await api.ok("POST", "/insights/directory/v1/events", {
        "service": ["all"], "start_time": (datetime.now(UTC) - timedelta(minutes=5)).isoformat(),
        "search_term": {"and": [{"event_type": "user_create"}, {"resource.id": created["id"]}]}})
    [record] = events
    assert (record["initiated_by"]["id"], record["initiated_by"]["email"]) == (admin["id"], admin["email"])


async def test_unknown_and_expired_keys_are_refused(api: Api, services: Services) -> None:
    assert "unknown or expired" in await refused(Api(api.client, "al_" + "x" * 40))
    _, _, caller = await linked_admin_key(api)
    await set_key(services, caller.key, expires_at=datetime.now(UTC) - timedelta(seconds=1))
    assert "unknown or expired" in await refused(caller)


async def test_a_key_stops_working_when_its_admin_loses_api_access(api: Api) -> None:
    _, admin, caller = await linked_admin_key(api)
    await api.ok("PATCH", f"/api/v1/admins/{admin['id']}", {"api_access": False})
    assert "no API access" in await refused(caller)
    await api.ok("PATCH", f"/api/v1/admins/{admin['id']}", {"api_access": True})
    assert (await caller.get("/api/v1/users"))[0] == 200


async def test_a_key_of_a_suspended_or_locked_user_is_refused(api: Api, services: Services) -> None:
    user, _, caller = await linked_admin_key(api)
    await api.ok("POST", f"/api/v1/users/{user['id']}/suspend")
    assert "suspended or locked" in await refused(caller)
    await api.ok("POST", f"/api/v1/users/{user['id']}/activate")
    assert (await caller.get("/api/v1/users"))[0] == 200
    async with services.session_factory() as session, session.begin():
        await session.execute(sa.update(orm.users).where(orm.users.c.id == user["id"]).values(account_locked=True))
    assert "suspended or locked" in await refused(caller)


async def test_last_use_is_written_at_most_once_a_minute(api: Api, services: Services) -> None:
    _, _, caller = await linked_admin_key(api)
    assert (await key_row(services, caller.key)).last_used_at is None
    await caller.ok("GET", "/api/v1/users")
    first = (await key_row(services, caller.key)).last_used_at
    assert first is not None
    await caller.ok("GET", "/api/v1/users")
    assert (await key_row(services, caller.key)).last_used_at == first
    await set_key(services, caller.key, last_used_at=datetime.now(UTC) - timedelta(minutes=2))
    await caller.ok("GET", "/api/v1/users")
    assert (await key_row(services, caller.key)).last_used_at >= first
