"""Shared fixtures. By default the suite runs on the embedded defaults (a SQLite file and an
in-process fakeredis). With ADMINLINK_TEST_DATABASE_URL / ADMINLINK_TEST_REDIS_URL set, the same
tests run against real PostgreSQL and Redis.

Tests share one migrated database: every test works in organizations of its own, and every query
is scoped to an organization, so tests cannot see each other's rows.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fakeredis
import pyotp
import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient
from aiosmtpd.controller import Controller

from service import config
from service.adapters import db, orm
from service.adapters.queue import embedded_pool, redis_pool
from service.adapters.repository import Users
from service.adapters.sessions import Session
from service.app import create_app
from service.bootstrap import Services, build
from service.domain import commands as c
from service.domain.model import Role, new_id
from service.http.context import SERVICES
from service.signin.enrollment import Enrollment
from service.signin.flows import Signin
from service.signin.records import ClientInfo
from workers.running import InProcessWorker

TEST_DATABASE_URL = os.environ.get("ADMINLINK_TEST_DATABASE_URL")
TEST_REDIS_URL = os.environ.get("ADMINLINK_TEST_REDIS_URL")


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    url = TEST_DATABASE_URL or f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('db') / 'test.db'}"
    url = config.normalise_database_url(url)

    async def fresh_schema() -> None:
        engine = db.make_engine(url)
        await db.downgrade(engine, "base")
        await db.upgrade(engine, "heads")
        await engine.dispose()

    asyncio.run(fresh_schema())
    return url


def suite_settings(database_url: str, tmp_path: Path, **extra: str) -> config.Settings:
    """The suite's settings, plus ``extra`` (``smtp_url="..."`` sets ADMINLINK_SMTP_URL)."""
    env = {
        "ADMINLINK_DATA_DIR": str(tmp_path / "data"),
        "ADMINLINK_DATABASE_URL": database_url,
        "ADMINLINK_SECRET_KEY": "test-secret-key-" + "x" * 32,
        "ADMINLINK_JOB_POLL_DELAY": "0.01",
        "ADMINLINK_COOKIE_SECURE": "false",
        **{f"ADMINLINK_{name.upper()}": value for name, value in extra.items()},
    }
    if TEST_REDIS_URL:
        env["ADMINLINK_REDIS_URL"] = TEST_REDIS_URL
    return config.load(env)


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> config.Settings:
    return suite_settings(database_url, tmp_path)


@pytest.fixture
async def services(settings: config.Settings) -> AsyncIterator[Services]:
    if settings.redis_url:
        redis = await redis_pool(settings.redis_url, settings.queue_name)
        await redis.flushdb()
    else:
        redis = embedded_pool(fakeredis.FakeServer(), settings.queue_name)
    built = await build(settings, redis=redis)
    yield built
    await built.close()


@pytest.fixture
async def client(services: Services, aiohttp_client: Any) -> TestClient:
    return await aiohttp_client(create_app(services))


@pytest.fixture
async def worker(services: Services) -> AsyncIterator[None]:
    """A real arq worker, in this process, on the same Redis as the web app; it stops once the
    jobs it is running have finished."""
    running = InProcessWorker(services)
    running.start()
    yield
    await running.stop(grace=20)


@dataclass
class Org:
    id: str
    admin_id: str
    email: str
    key: str
    password: str
    totp_secret: str

    @property
    def headers(self) -> dict[str, str]:
        return {"x-api-key": self.key}


async def bootstrap_org(services: Services, name: str = "Acme") -> Org:
    actor = c.Actor(new_id(), "test", "system", Role.BILLING, source="cli")
    made = await services.bus.handle(c.BootstrapOrganization(actor, name, f"owner-{new_id()[:8]}@acme.test"))
    return Org(made["organization_id"], made["admin_id"], made["email"], made["api_key"], made["password"],
               made["totp_secret"])


@pytest.fixture
async def org(services: Services) -> Org:
    return await bootstrap_org(services)


@dataclass
class Mailbox:
    messages: list[Any]

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd API)
        self.messages.append(envelope)
        return "250 OK"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def smtp_server() -> Iterator[tuple[str, Mailbox]]:
    """A real SMTP server (aiosmtpd) on loopback; yields its URL and what it received."""
    mailbox = Mailbox([])
    port = free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port)
    controller.start()
    yield f"smtp://127.0.0.1:{port}", mailbox
    controller.stop()


async def enroll_totp_as_the_user(services: Services, user_id: str) -> str:
    """TOTP enrolled as a user does it in the user portal (a new secret, confirmed with a code;
    an administrator never sees it), from a user-portal session opened here; then aged as if it
    had been enrolled minutes ago, so the codes around now still sign in."""
    async with services.session_factory() as db_session:
        org_id = await db_session.scalar(sa.select(orm.users.c.organization_id).where(orm.users.c.id == user_id))
        user = await Users(db_session).get(org_id, user_id)
    assert user is not None
    session = Session("user", user.id, user.organization_id, user.auth_epoch, "user_portal", "password",
                      "now")
    token = await services.sessions.open(session)
    enrollment = Enrollment(Signin(services))
    secret = (await enrollment.totp_start(token, session, user))["secret"]
    code = pyotp.TOTP(secret).now()
    await enrollment.totp_confirm(token, session, user, code, ClientInfo("127.0.0.1", "test-setup", "web"))
    await services.sessions.close(token)
    async with services.session_factory() as db_session, db_session.begin():
        table = orm.totp_credentials
        await db_session.execute(sa.update(table).where(table.c.user_id == user.id).values(last_used_step=None))
    return secret


class Api:
    """The management API as a client sees it, with one admin's API key."""

    def __init__(self, client: TestClient, key: str, services: Services | None = None) -> None:
        self.client = client
        self.key = key
        # Where users enroll TOTP as in the user portal: the test client's app, or (against a
        # separate process) services on the same database and Redis.
        self.services = services

    async def call(self, method: str, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
        response = await self.client.request(method, path, json=body, headers={"x-api-key": self.key, **headers})
        text = await response.text()
        return response.status, (await response.json() if text else None)

    async def get(self, path: str) -> tuple[int, Any]:
        return await self.call("GET", path)

    async def post(self, path: str, body: Any = None, **headers: str) -> tuple[int, Any]:
        return await self.call("POST", path, body, **headers)

    async def ok(self, method: str, path: str, body: Any = None) -> Any:
        status, data = await self.call(method, path, body)
        assert status < 300, (method, path, status, data)
        return data

    async def user(self, email: str | None = None, *, mfa: bool = True, **fields: Any) -> dict[str, Any]:
        """A user with a password and, unless told otherwise, TOTP enrolled."""
        email = email or f"user-{new_id()[:10]}@acme.test"
        body = {"email": email, "username": email.split("@")[0], "password": "a long user password 1",
                **fields}
        user = await self.ok("POST", "/api/v1/users", body)
        if mfa:
            services = self.services or self.client.app[SERVICES]
            user["totp_secret"] = await enroll_totp_as_the_user(services, user["id"])
        return user

    async def admin_with_key(self, role: Role, email: str | None = None) -> tuple[dict[str, Any], Api]:
        """A classic admin with its own password and TOTP, and an API key of its own."""
        email = email or f"admin-{new_id()[:10]}@acme.test"
        admin = await self.ok("POST", "/api/v1/admins", {"email": email, "role": role.value,
                                                          "password": "a long admin password 1",
                                                          "api_access": True})
        key = (await self.ok("POST", f"/api/v1/admins/{admin['id']}/api-keys"))["key"]
        return admin, Api(self.client, key)

    async def admin_from_user(self, user: dict[str, Any], role: Role = Role.BILLING) -> dict[str, Any]:
        return await self.ok("POST", "/api/v1/admins/from-user",
                             {"user_id": user["id"], "role": role.value, "api_access": True})


@pytest.fixture
def api(client: TestClient, org: Org) -> Api:
    return Api(client, org.key)
