"""When the database or Redis fails under a request, the client gets 503 ``temporarily_unavailable``
with ``Retry-After`` (nothing was done; try again), never a 500, and the service recovers by itself:
connections PostgreSQL dropped are replaced without a restart."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import sqlalchemy as sa
from arq.connections import ArqRedis

from service.adapters import db, orm
from service.adapters.sessions import Session, SessionStore
from service.app import create_app
from service.bootstrap import Services
from tests.conftest import TEST_DATABASE_URL, Api, Org, free_port
from tests.service.test_webhook_support import event, sender


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="terminating server connections needs PostgreSQL "
                                                  "(ADMINLINK_TEST_DATABASE_URL)")
async def test_connections_dropped_by_postgresql_are_replaced(api: Api, services: Services) -> None:
    for _ in range(3):  # several pooled connections in use before the drop
        assert (await api.call("GET", "/api/v1/users?limit=1"))[0] == 200
    assert await drop_every_other_connection(services) >= 1
    answers = [await api.call("GET", "/api/v1/users?limit=1") for _ in range(3)]
    failed = [body for status, body in answers if status != 200]
    assert all(body["error"]["code"] == "temporarily_unavailable" for body in failed), answers
    assert len(failed) <= 1 and answers[-1][0] == 200, answers


async def drop_every_other_connection(services: Services) -> int:
    """PostgreSQL ends every client connection to the database but the one asking."""
    outsider = db.make_engine(services.settings.database_url)  # not one of the pools' connections
    async with outsider.connect() as conn:
        dropped = await conn.scalar(sa.text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"))
    await outsider.dispose()
    return int(dropped)


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="terminating server connections needs PostgreSQL "
                                                  "(ADMINLINK_TEST_DATABASE_URL)")
async def test_webhook_receiver_replaces_its_dropped_connections(api: Api, services: Services) -> None:
    """The receiver writes on asyncpg's own pool (adapters.direct): a delivery after PostgreSQL
    dropped that pool's connections is recorded, or answered 503 and recorded when sent again."""
    user = await api.user()
    hr = await sender(api, "hr")
    await hr.accepted(event("employee.suspended", email=user["email"]))  # the pool holds a connection
    assert await drop_every_other_connection(services) >= 1
    payload = event("employee.returned", email=user["email"])
    answers = [await hr.send(payload) for _ in range(2)]
    assert [status for status, _, _ in answers if status != 202] in ([], [503]), answers
    assert answers[-1][0] == 202, answers
    reader = db.make_engine(services.settings.database_url)  # the test's own pool lost its connections too
    async with reader.connect() as conn:
        row = (await conn.execute(sa.select(orm.jobs).where(orm.jobs.c.id == answers[-1][1]["job_id"]))).one()
    await reader.dispose()
    assert (row.status, row.args["events"][0]["type"]) == ("queued", "employee.returned")


async def test_redis_down_answers_503_with_retry_after(services: Services, org: Org, aiohttp_client: Any) -> None:
    token = await services.sessions.open(Session("admin", org.admin_id, org.id, 0, "admin_portal", "totp", "now"))
    dead = ArqRedis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    down = await aiohttp_client(create_app(dataclasses.replace(
        services, redis=dead, sessions=SessionStore(dead, services.settings.session_idle_seconds))))
    response = await down.get("/auth/session", headers={"Authorization": f"Bearer {token}"})
    body = await response.json()
    assert (response.status, body["error"]["code"]) == (503, "temporarily_unavailable")
    assert int(response.headers["Retry-After"]) > 0
