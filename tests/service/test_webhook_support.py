"""What the webhook tests share: a sender that signs like an HR system or a directory does (the
Standard Webhooks scheme through the ``standardwebhooks`` package, or BambooHR's headers), and
ways to read what happened. No tests here."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient
from arq.constants import in_progress_key_prefix
from standardwebhooks.webhooks import Webhook

from service.adapters import orm
from service.bootstrap import Services
from service.domain.model import new_id
from tests.conftest import Api

TERMINAL = ("complete", "stale", "denied", "dead")
UNFINISHED = ("queued", "in_progress", "failed")


@pytest.fixture(autouse=True)
async def clean_jobs(request: pytest.FixtureRequest, services: Services) -> Any:
    """Afterwards, the jobs the test left unfinished are removed: tests share one database (one
    after the other), and a later test's reconciler would run them as its own. A test with a
    worker does this before its worker stops (``stopped_cleanly``)."""
    started = datetime.now(UTC) - timedelta(seconds=1)
    yield
    if "worker" not in request.fixturenames:
        await remove_unfinished_jobs(services, started)


async def remove_unfinished_jobs(services: Services, since: datetime) -> None:
    async with services.session_factory() as session, session.begin():
        await session.execute(sa.delete(orm.jobs).where(orm.jobs.c.created_at >= since,
                                                        orm.jobs.c.status.in_(UNFINISHED)))


async def stopped_cleanly(services: Services, org_id: str, started: datetime) -> None:
    """Before a test's worker stops: its jobs finished, the worker idle (it may be running jobs
    that earlier tests left behind, found by its reconciler), the test's leftovers removed."""
    await quiet(services, org_id)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        running = await services.redis.keys(in_progress_key_prefix + "*")
        # A unique cron job keeps its mark for its whole period; only jobs count here.
        if not [key for key in running if b":cron:" not in key]:
            break
        await asyncio.sleep(0.02)
    await remove_unfinished_jobs(services, started)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def standard_headers(secret: str, body: bytes, *, message_id: str | None = None,
                     at: datetime | None = None) -> dict[str, str]:
    message_id = message_id or f"msg_{new_id()}"
    at = at or datetime.now(UTC)
    signature = Webhook(secret).sign(message_id, at, body.decode())
    return {"webhook-id": message_id, "webhook-timestamp": str(int(at.timestamp())),
            "webhook-signature": signature, "content-type": "application/json"}


def bamboo_headers(secret: str, body: bytes, *, at: datetime | None = None) -> dict[str, str]:
    timestamp = str(int((at or datetime.now(UTC)).timestamp()))
    signature = hmac.new(secret.encode(), body + timestamp.encode(), hashlib.sha256).hexdigest()
    return {"X-BambooHR-Signature": signature, "X-BambooHR-Timestamp": timestamp,
            "content-type": "application/json"}


def event(kind: str, *, email: str | None = None, at: datetime | None = None, data: dict[str, Any] | None = None,
          event_id: str | None = None, **subject: str) -> dict[str, Any]:
    if email is not None:
        subject["email"] = email
    return {"id": event_id or f"evt_{new_id()}", "type": kind, "occurred_at": iso(at or datetime.now(UTC)),
            "subject": subject, "data": data or {}}


class Sender:
    """One integration's deliveries to its receiver."""

    def __init__(self, client: TestClient, kind: str, integration: dict[str, Any]) -> None:
        self.client = client
        self.kind = kind
        self.id = integration["id"]
        self.secret = integration["secret"]
        self.path = f"/webhooks/{kind}/{self.id}"

    async def raw(self, body: bytes, headers: dict[str, str]) -> tuple[int, Any, dict[str, str]]:
        response = await self.client.post(self.path, data=body, headers=headers)
        text = await response.text()
        return response.status, (json.loads(text) if text else None), dict(response.headers)

    async def send(self, payload: Any, *, secret: str | None = None, message_id: str | None = None,
                   at: datetime | None = None) -> tuple[int, Any, dict[str, str]]:
        body = json.dumps(payload).encode()
        return await self.raw(body, standard_headers(secret or self.secret, body, message_id=message_id, at=at))

    async def accepted(self, payload: Any, **options: Any) -> str:
        status, body, _ = await self.send(payload, **options)
        assert status == 202, body
        return str(body["job_id"])


async def integration(api: Api, kind: str, role: str = "Administrator with Billing", provider: str = "generic",
                      **fields: Any) -> dict[str, Any]:
    body = {"kind": kind, "name": f"{kind} {new_id()[:8]}", "role": role, "provider": provider, **fields}
    return dict(await api.ok("POST", "/api/v1/integrations", body))


async def sender(api: Api, kind: str, role: str = "Administrator with Billing", **fields: Any) -> Sender:
    return Sender(api.client, kind, await integration(api, kind, role, **fields))


async def job_row(services: Services, job_id: str) -> Any:
    async with services.session_factory() as session:
        return (await session.execute(sa.select(orm.jobs).where(orm.jobs.c.id == job_id))).one()


async def settled(services: Services, job_id: str, within: float = 20.0) -> Any:
    """The job's row once it has reached a final status."""
    deadline = time.monotonic() + within
    while True:
        row = await job_row(services, job_id)
        if row.status in TERMINAL:
            return row
        assert time.monotonic() < deadline, f"job {job_id} still {row.status}: {row.error}"
        await asyncio.sleep(0.02)


async def quiet(services: Services, org_id: str, within: float = 20.0) -> None:
    """Until every job of the organization (emails and session endings too) has finished, so a
    test leaves no job running when its worker stops."""
    deadline = time.monotonic() + within
    while any(r.status in UNFINISHED for r in await jobs_of(services, org_id)):
        assert time.monotonic() < deadline, "jobs still running"
        await asyncio.sleep(0.02)


async def records(services: Services, org_id: str, **where: Any) -> list[dict[str, Any]]:
    table = orm.insights_events
    clauses = [table.c.organization_id == org_id] + [table.c[k] == v for k, v in where.items()]
    async with services.session_factory() as session:
        rows = await session.execute(sa.select(table.c.body).where(*clauses).order_by(table.c.timestamp))
        return [r.body for r in rows]


async def jobs_of(services: Services, org_id: str) -> list[Any]:
    async with services.session_factory() as session:
        return list(await session.execute(sa.select(orm.jobs).where(orm.jobs.c.organization_id == org_id)))


def minutes_ago(minutes: float) -> datetime:
    return datetime.now(UTC) - timedelta(minutes=minutes)
