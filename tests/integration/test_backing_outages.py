"""When the database or Redis fails under a request, the client gets 503 ``temporarily_unavailable``
with ``Retry-After`` (nothing was done; try again), never a 500, and the service recovers by itself:
connections PostgreSQL dropped are replaced without a restart."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import sqlalchemy as sa
from arq.connections import ArqRedis

from service.adapters import db
from service.adapters.sessions import Session, SessionStore
from service.api.app import create_app
from service.bootstrap import Services
from tests.conftest import TEST_DATABASE_URL, Api, Org, free_port


@pytest.mark.skipif(not TEST_DATABASE_URL, reason="terminating server connections needs PostgreSQL "
                                                  "(ADMINLINK_TEST_DATABASE_URL)")
async def test_connections_dropped_by_postgresql_are_replaced(api: Api, services: Services) -> None:
    for _ in range(3):  # several pooled connections in use before the drop
        assert (await api.call("GET", "/api/v1/users?limit=1"))[0] == 200
    outsider = db.make_engine(services.settings.database_url)  # not one of the pool's connections
    async with outsider.connect() as conn:
        dropped = await conn.scalar(sa.text(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() AND backend_type = 'client backend'"))
    await outsider.dispose()
    assert dropped >= 1
    answers = [await api.call("GET", "/api/v1/users?limit=1") for _ in range(3)]
    failed = [body for status, body in answers if status != 200]
    assert all(body["error"]["code"] == "temporarily_unavailable" for body in failed), answers
    assert len(failed) <= 1 and answers[-1][0] == 200, answers


async def test_redis_down_answers_503_with_retry_after(services: Services, org: Org, aiohttp_client: Any) -> None:
    token = await services.sessions.open(Session("admin", org.admin_id, org.id, 0, "admin_portal", "totp", "now"))
    dead = ArqRedis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5)
    down = await aiohttp_client(create_app(dataclasses.replace(
        services, redis=dead, sessions=SessionStore(dead, services.settings.session_idle_seconds))))
    response = await down.get("/auth/session", headers={"Authorization": f"Bearer {token}"})
    body = await response.json()
    assert (response.status, body["error"]["code"]) == (503, "temporarily_unavailable")
    assert int(response.headers["Retry-After"]) > 0
