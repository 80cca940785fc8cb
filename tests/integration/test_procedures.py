"""The seed's four procedures end to end: HTTP, a real arq worker, a real SMTP server (aiosmtpd).

Create admin from user, update an existing admin with a matching user, remove admin access,
delete the user: responses, database state, sessions refused afterwards, one email each, and the
exact Directory Insights records.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from email import message_from_bytes
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from service import config
from service.adapters import orm
from service.adapters.queue import redis_pool
from service.adapters.sessions import PREFIX, Session
from service.app import create_app
from service.bootstrap import Services, build
from service.domain.model import Role
from tests.conftest import Api, Mailbox, Org, bootstrap_org
from tests.service.test_admin_roles import records
from workers.running import InProcessWorker

pytestmark = pytest.mark.integration


@pytest.fixture
async def smtp_services(settings: config.Settings, smtp_server: tuple[str, Mailbox],
                        services: Services) -> AsyncIterator[Services]:
    """The same wiring as `services`, with mail going to the SMTP server."""
    url, _ = smtp_server
    with_smtp = dataclasses.replace(settings, smtp_url=url)
    redis = services.redis if not settings.redis_url else await redis_pool(settings.redis_url, settings.queue_name)
    built = await build(with_smtp, redis=redis)
    yield built
    if settings.redis_url:
        await built.close()
    else:
        await built.engine.dispose()


@pytest.fixture
async def e2e(smtp_services: Services, aiohttp_client: Any) -> AsyncIterator[tuple[Api, Org, Services]]:
    client: TestClient = await aiohttp_client(create_app(smtp_services))
    org = await bootstrap_org(smtp_services)
    worker = InProcessWorker(smtp_services)
    worker.start()
    yield Api(client, org.key), org, smtp_services
    await worker.stop(grace=20)


async def eventually(check: Callable[[], Any], within: float = 15.0) -> Any:
    deadline = asyncio.get_running_loop().time() + within
    while True:
        result = await check()
        if result:
            return result
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.05)


async def jobs_settled(services: Services, org_id: str) -> bool:
    async with services.session_factory() as session:
        open_jobs = await session.scalar(sa.select(sa.func.count()).select_from(orm.jobs).where(
            orm.jobs.c.organization_id == org_id, orm.jobs.c.status != "complete"))
    return open_jobs == 0


def mails_to(mailbox: Mailbox, recipient: str) -> list[str]:
    subjects = []
    for envelope in mailbox.messages:
        if recipient in envelope.rcpt_tos:
            subjects.append(str(message_from_bytes(envelope.content)["Subject"]))
    return subjects


async def open_admin_session(services: Services, org: Org, admin: dict[str, Any]) -> str:
    async with services.session_factory() as session:
        epoch = await session.scalar(sa.select(orm.admins.c.auth_epoch).where(orm.admins.c.id == admin["id"]))
    return await services.sessions.open(Session("admin", admin["id"], org.id, int(epoch or 0), "admin_portal",
                                                "totp", "now"))


async def session_status(api: Api, token: str) -> int:
    response = await api.client.get("/auth/session", headers={"Authorization": f"Bearer {token}"})
    return response.status


def seed_events(found: list[dict[str, Any]], since: int) -> list[tuple[str, str, bool]]:
    return [(r["event_type"], r["resource"]["type"], r["success"]) for r in found[since:]]


async def test_the_seeds_four_procedures(e2e: tuple[Api, Org, Services], smtp_server: tuple[str, Mailbox]) -> None:
    api, org, services = e2e
    _, mailbox = smtp_server

    # 1. Create a new admin from an existing user.
    first = await api.user("first@acme.test", firstname="First")
    seen = len(await records(services, org.id))
    created = await api.admin_from_user(first, Role.ADMINISTRATOR)
    assert created["linked_user_id"] == first["id"] and created["mfa_enrollment"] == "inherited_from_user"
    assert (await api.ok("GET", f"/api/v1/users/{first['id']}"))["admin"] == {
        "id": created["id"], "role": "Administrator"}
    found = await records(services, org.id)
    assert seed_events(found, seen) == [("user_update", "user", True), ("admin_create", "admin", True)]
    assert found[-1]["initiated_by"] == {"id": org.admin_id, "type": "admin", "email": org.email,
                                         "administrator": True, "source": "api"}
    await eventually(lambda: jobs_settled(services, org.id))
    assert mails_to(mailbox, "first@acme.test") == ["You have been given an admin role"]

    # 2. Update an existing admin with a matching user: its own credentials go, its session ends.
    classic, _ = await api.admin_with_key(Role.MANAGER, "Second@Acme.test")
    second = await api.user("second@acme.test")
    classic_session = await open_admin_session(services, org, classic)
    assert await session_status(api, classic_session) == 200
    seen = len(await records(services, org.id))
    linked = await api.ok("POST", f"/api/v1/admins/{classic['id']}/link-user", {"acknowledge": True})
    assert linked["linked_user_id"] == second["id"] and linked["mfa_enrollment"] == "linked_user"
    assert await session_status(api, classic_session) == 401
    found = await records(services, org.id)
    assert seed_events(found, seen) == [("user_update", "user", True), ("admin_update", "admin", True)]
    assert {c["field"] for c in found[-1]["changes"]} == {"linked_user_id", "mfa_enrollment", "password", "totp",
                                                          "email"}  # "Second@Acme.test" takes the user's spelling
    assert all(c["from"] is None and c["to"] is None for c in found[-1]["changes"]
               if c["field"] in ("password", "totp"))  # never secret values
    async with services.session_factory() as session:
        row = (await session.execute(sa.select(orm.admins).where(orm.admins.c.id == classic["id"]))).one()
    assert row.password_hash is None and row.totp_secret is None

    # 3. Remove admin access: the admin goes, the user stays, the session ends.
    first_session = await open_admin_session(services, org, created)
    seen = len(await records(services, org.id))
    status, _ = await api.post(f"/api/v1/admins/{created['id']}/remove-access", {"acknowledge": True})
    assert status == 204
    assert await session_status(api, first_session) == 401
    assert (await api.ok("GET", f"/api/v1/users/{first['id']}"))["admin"] is None
    assert (await api.get(f"/api/v1/admins/{created['id']}"))[0] == 404
    found = await records(services, org.id)
    assert seed_events(found, seen) == [("user_update", "user", True), ("admin_delete", "admin", True)]

    # 4. Delete the user who holds an admin role: the admin goes with it.
    second_session = await open_admin_session(services, org, linked)
    seen = len(await records(services, org.id))
    status, _ = await api.call("DELETE", f"/api/v1/users/{second['id']}")
    assert status == 204
    assert await session_status(api, second_session) == 401
    assert (await api.get(f"/api/v1/admins/{linked['id']}"))[0] == 404
    found = await records(services, org.id)
    assert seed_events(found, seen) == [("admin_delete", "admin", True), ("user_delete", "user", True)]

    # Every side effect ran once: one email per change, session keys cleaned up.
    await eventually(lambda: jobs_settled(services, org.id))
    assert mails_to(mailbox, "first@acme.test") == ["You have been given an admin role",
                                                    "Your admin role has been removed"]
    assert mails_to(mailbox, "second@acme.test") == ["Your admin account now signs in with your user account",
                                                     "Your user account and its admin role have been deleted"]
    for kind, identity in [("admin", classic["id"]), ("admin", created["id"]), ("admin", linked["id"])]:
        assert not await services.redis.exists(f"{PREFIX}index:{kind}:{identity}")
