"""The ops API over real jobs run by a real arq worker: queue statistics, listings, a job's
detail with secrets redacted, retry of a dead job, abort of a queued and of a running one, the
refusals, and the Directory Insights record of every action."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient
from aiosmtpd.controller import Controller
from arq.constants import abort_jobs_ss, result_key_prefix

from service import config
from service.adapters import orm
from service.bootstrap import Services
from service.domain.commands import Actor
from service.domain.model import Role, new_id
from service.ops.actions import retry_job, system_actor
from tests.conftest import Api, Mailbox, Org, bootstrap_org, free_port, suite_settings
from tests.service.ops_support import Worker, tidy  # noqa: F401 (tidy: an autouse fixture)
from workers.jobs import reconcile_jobs

OPS = "/api/v1/ops"

@pytest.fixture
def smtp_port() -> int:
    return free_port()


@pytest.fixture
def settings(database_url: str, tmp_path: Path, smtp_port: int) -> config.Settings:
    """The suite's settings, with mail going to an SMTP port that nobody listens on until a test
    starts a server there, and a job dead after its first failure."""
    return suite_settings(database_url, tmp_path, smtp_url=f"smtp://127.0.0.1:{smtp_port}", job_max_tries="1",
                          metrics_token="scrape-token-" + "y" * 32)


@pytest.fixture
def smtp_later(smtp_port: int) -> Iterator[tuple[Mailbox, Controller]]:
    mailbox = Mailbox([])
    controller = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    yield mailbox, controller
    try:
        controller.stop()
    except AssertionError:  # never started
        pass


async def job_row(services: Services, job_id: str) -> Any:
    async with services.session_factory() as session:
        return (await session.execute(sa.select(orm.jobs).where(orm.jobs.c.id == job_id))).one()


async def wait_for_status(services: Services, job_id: str, *statuses: str, seconds: float = 10.0) -> Any:
    for _ in range(int(seconds / 0.05)):
        row = await job_row(services, job_id)
        if row.status in statuses:
            return row
        await asyncio.sleep(0.05)
    raise AssertionError(f"job {job_id} stayed {row.status}, expected {statuses}")


async def add_job(services: Services, org: Org, function: str, args: dict[str, Any],
                  enqueue: bool = True) -> str:
    actor = Actor(org.id, "test", "system", Role.BILLING)
    async with services.uow(actor) as uow:
        job_id = await uow.add_job(function, args)
        if not enqueue:
            uow._new_jobs = []  # the row alone: as if Redis had been down at commit
        await uow.commit()
    return job_id


async def make_older(services: Services, job_id: str, by: timedelta) -> None:
    async with services.session_factory() as session, session.begin():
        await session.execute(sa.update(orm.jobs).where(orm.jobs.c.id == job_id).values(
            created_at=datetime.now(UTC) - by))


async def insights_of(services: Services, org_id: str, event_type: str) -> list[dict[str, Any]]:
    table = orm.insights_events
    async with services.session_factory() as session:
        rows = await session.execute(sa.select(table.c.body).where(
            table.c.organization_id == org_id, table.c.event_type == event_type).order_by(table.c.timestamp))
        return [r.body for r in rows]


async def mail_job(api: Api, services: Services, org: Org) -> tuple[str, str]:
    """A real admin-role assignment, whose notice email becomes a send_email job."""
    user = await api.user()
    await api.admin_from_user(user)
    async with services.session_factory() as session:
        job_id = await session.scalar(
            sa.select(orm.jobs.c.id).where(orm.jobs.c.organization_id == org.id,
                                           orm.jobs.c.function == "send_email")
            .order_by(orm.jobs.c.created_at.desc()).limit(1))
    return str(job_id), user["email"]


async def test_retry_of_a_dead_job_runs_it_again(api: Api, client: TestClient, services: Services, org: Org,
                                                 workers: Worker, smtp_later: tuple[Mailbox, Controller]) -> None:
    await workers.start()
    job_id, email = await mail_job(api, services, org)
    dead = await wait_for_status(services, job_id, "dead")  # nobody listens for SMTP yet
    assert dead.tries == 1 and "Error" in dead.error
    assert await services.redis.exists(result_key_prefix + job_id)  # arq keeps its result: its id is taken
    await make_older(services, job_id, timedelta(hours=1))

    listed = await api.ok("GET", f"{OPS}/jobs?status=dead")
    assert [j["id"] for j in listed["results"]] == [job_id]
    mailbox, smtp = smtp_later
    smtp.start()
    status, body = await api.post(f"{OPS}/jobs/{job_id}/retry")
    assert status == 200, body
    assert body["enqueued"] is True and body["job"]["status"] in ("queued", "in_progress", "complete")
    done = await wait_for_status(services, job_id, "complete")
    assert done.tries == 1
    waited = (await api.ok("GET", f"{OPS}/jobs/{job_id}"))["time_in_queue_seconds"]
    assert 0 <= waited < 60, waited  # counted from the retry, not from the job's creation an hour ago
    await asyncio.sleep(0.1)
    # The worker's reconciler may also hand over mail that earlier tests left pending in the
    # shared database; this job's own message is sent once.
    assert [m.rcpt_tos for m in mailbox.messages if email in m.rcpt_tos] == [[email]]

    [record] = await insights_of(services, org.id, "job_retry")
    assert record["success"] is True and record["resource"] == {"id": job_id, "type": "job"}
    assert record["initiated_by"]["id"] == org.admin_id and record["initiated_by"]["administrator"] is True
    assert {"field": "status", "from": "dead", "to": "queued"} in record["changes"]
    assert record["job"]["function"] == "send_email"

    status, body = await api.post(f"{OPS}/jobs/{job_id}/retry")
    assert (status, body["error"]["code"]) == (409, "job_not_retryable")


async def test_the_reconciler_hands_over_a_job_retried_out_of_reach_of_the_workers(services: Services,
                                                                                     org: Org) -> None:
    """As ``adminlink jobs retry`` beside an embedded queue: the row is queued again, while the
    workers' Redis still keeps the last run's result, under which arq refuses the id."""
    job_id = await add_job(services, org, "send_email", {"mail_id": "x"}, enqueue=False)
    async with services.session_factory() as session, session.begin():
        await session.execute(sa.update(orm.jobs).where(orm.jobs.c.id == job_id).values(status="dead", tries=1))
    await services.redis.set(result_key_prefix + job_id, b"the last run")
    done = await retry_job(services, system_actor(org.id, "test"), job_id, reaches_workers=False)
    assert done["enqueued"] is False
    await make_older(services, job_id, timedelta(minutes=1))
    assert await reconcile_jobs({"services": services}) >= 1
    assert not await services.redis.exists(result_key_prefix + job_id)
    assert await services.redis.zscore(services.settings.queue_name, job_id) is not None


async def test_abort_of_a_queued_job_keeps_it_from_running(api: Api, services: Services, org: Org,
                                                           workers: Worker) -> None:
    job_id = await add_job(services, org, "send_email", {"mail_id": "nobody"})
    assert await services.redis.zscore(services.settings.queue_name, job_id) is not None
    status, body = await api.post(f"{OPS}/jobs/{job_id}/abort")
    assert status == 200, body
    assert (body["job"]["status"], body["was"], body["arq"]) == ("aborted", "queued", "removed_from_queue")
    assert await services.redis.zscore(services.settings.queue_name, job_id) is None
    await workers.start()
    await asyncio.sleep(0.5)
    row = await job_row(services, job_id)
    assert row.status == "aborted" and row.started_at is None and row.tries == 0
    [record] = await insights_of(services, org.id, "job_abort")
    assert {"field": "status", "from": "queued", "to": "aborted"} in record["changes"]
    status, body = await api.post(f"{OPS}/jobs/{job_id}/abort")
    assert (status, body["error"]["code"]) == (409, "job_not_abortable")
    # An abort never leaves arq's abort mark for an id that was not running.
    assert await services.redis.zscore(abort_jobs_ss, job_id) is None


async def test_abort_of_a_running_job_cancels_it(api: Api, services: Services, org: Org, workers: Worker,
                                                 smtp_port: int) -> None:
    # An SMTP server that accepts the connection and never answers: the email job hangs.
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # until the client gives up
        writer.close()

    hung = await asyncio.start_server(never_answer, "127.0.0.1", smtp_port)
    try:
        await workers.start()
        job_id, _ = await mail_job(api, services, org)
        await wait_for_status(services, job_id, "in_progress")
        status, body = await api.post(f"{OPS}/jobs/{job_id}/abort")
        assert status == 200, body
        assert (body["was"], body["arq"]) == ("in_progress", "cancel_requested")
        for _ in range(100):
            if await services.redis.exists(result_key_prefix + job_id):
                break
            await asyncio.sleep(0.05)
        result = await services.redis.get(result_key_prefix + job_id)
        assert result is not None and json.loads(result)["s"] is False  # arq's record of the cancelled run
        assert (await job_row(services, job_id)).status == "aborted"
        assert await services.redis.zscore(abort_jobs_ss, job_id) is None
    finally:
        hung.close()


async def test_queue_statistics(api: Api, services: Services, org: Org, workers: Worker) -> None:
    await workers.start()
    finished = [await add_job(services, org, "send_email", {"mail_id": f"u{i}"}) for i in range(3)]
    for job_id in finished:
        await wait_for_status(services, job_id, "complete")
    await workers.stop()
    await add_job(services, org, "send_email", {"mail_id": "later"}, enqueue=False)
    other = await bootstrap_org(services, "Other")
    await add_job(services, other, "send_email", {"mail_id": "theirs"}, enqueue=False)
    stats = await api.ok("GET", f"{OPS}/queues")
    [queue] = [q for q in stats["queues"] if q["queue"] == "send_email"]
    assert queue["queued"] == 1 and queue["in_progress"] == 0 and queue["dead"] == 0
    assert queue["completed"] == {"1m": 3, "5m": 3, "15m": 3}
    assert queue["time_in_queue_seconds"]["p50"] is not None and queue["time_in_queue_seconds"]["p99"] >= 0
    assert queue["oldest_queued_age_seconds"] is not None and queue["oldest_queued_age_seconds"] >= 0


async def test_listing_pages_and_filters(api: Api, services: Services, org: Org) -> None:
    ids = [await add_job(services, org, "apply_webhook", {"integration_id": f"i{i}", "events": []}, enqueue=False)
           for i in range(5)]
    mail = await add_job(services, org, "send_email", {"mail_id": "m"}, enqueue=False)
    seen: list[str] = []
    cursor = ""
    while True:
        query = "function=apply_webhook&limit=2" + (f"&cursor={cursor}" if cursor else "")
        page = await api.ok("GET", f"{OPS}/jobs?{query}")
        seen += [j["id"] for j in page["results"]]
        if not page["next_cursor"]:
            break
        cursor = page["next_cursor"]
    assert sorted(seen) == sorted(ids) and len(seen) == len(set(seen))
    everything = await api.ok("GET", f"{OPS}/jobs?status=queued&since=2000-01-01T00:00:00Z")
    assert {j["id"] for j in everything["results"]} >= {*ids, mail}
    # An offset is converted to UTC, on SQLite (which compares the stored text) as on PostgreSQL.
    a_minute_ago = datetime.now(UTC) - timedelta(minutes=1)
    for moment, expected in ((a_minute_ago, {*ids, mail}), (a_minute_ago + timedelta(hours=1), set())):
        for zone in (UTC, timezone(timedelta(hours=2)), timezone(timedelta(hours=-5))):
            since = quote(moment.astimezone(zone).isoformat())
            found = {j["id"] for j in (await api.ok("GET", f"{OPS}/jobs?since={since}&limit=500"))["results"]}
            assert found & {*ids, mail} == expected, zone
    far = base64.urlsafe_b64encode(json.dumps(["9999-12-31T23:59:59-14:00", "a"]).encode()).decode()
    for bad in ("status=sleeping", "limit=0", "since=yesterday", "since=", "cursor=%%%",
                "since=9999-12-31T23:59:59-14:00", "since=0001-01-01T00:00:00%2B14:00", f"cursor={far}",
                "function=%00abc"):
        status, body = await api.get(f"{OPS}/jobs?{bad}")
        assert status == 400, (bad, body)
    for method, path in (("GET", f"{OPS}/jobs/a%00b"), ("POST", f"{OPS}/jobs/a%00b/retry"),
                         ("GET", "/api/v1/users/a%00b")):
        status, body = await api.call(method, path)
        assert (status, body["error"]["code"]) == (404, "not_found"), path


async def test_detail_redacts_secrets(api: Api, services: Services, org: Org) -> None:
    job_id = await add_job(services, org, "send_email", {
        "mail_id": "m1", "password": "hunter2-hunter2", "nested": {"api_key": "k", "note": "key alk_abcdefghijkl"}},
        enqueue=False)
    job = await api.ok("GET", f"{OPS}/jobs/{job_id}")
    assert job["args"] == {"mail_id": "m1", "password": "[redacted]",
                           "nested": {"api_key": "[redacted]", "note": "key alk_[redacted]"}}
    assert job["status"] == "queued" and job["tries"] == 0 and job["arq"]["in_queue"] is False
    assert "hunter2" not in str(job)


async def test_refusals_change_nothing_and_are_recorded(api: Api, client: TestClient, services: Services,
                                                        org: Org) -> None:
    job_id = await add_job(services, org, "send_email", {"mail_id": "x"}, enqueue=False)
    manager_admin, manager = await api.admin_with_key(Role.MANAGER)
    for method, path in [("GET", f"{OPS}/queues"), ("GET", f"{OPS}/jobs"), ("GET", f"{OPS}/jobs/{job_id}"),
                         ("POST", f"{OPS}/jobs/{job_id}/retry"), ("POST", f"{OPS}/jobs/{job_id}/abort")]:
        status, body = await manager.call(method, path)
        assert (status, body["error"]["code"]) == (403, "permission_denied"), path
        assert body["error"]["required_role"] == "Administrator"
    assert (await job_row(services, job_id)).status == "queued"
    denied = await insights_of(services, org.id, "job_abort")
    assert [(r["success"], r["initiated_by"]["id"]) for r in denied] == [(False, manager_admin["id"])]
    for action in ("retry", "abort"):  # a role that may not operate jobs learns nothing of which exist
        status, body = await manager.post(f"{OPS}/jobs/{new_id()}/{action}")
        assert (status, body["error"]["code"]) == (403, "permission_denied"), action

    other = await bootstrap_org(services, "Other")
    theirs = await add_job(services, other, "send_email", {"mail_id": "y"}, enqueue=False)
    for method, path in [("GET", f"{OPS}/jobs/{theirs}"), ("POST", f"{OPS}/jobs/{theirs}/abort"),
                         ("POST", f"{OPS}/jobs/{new_id()}/retry")]:
        status, body = await api.call(method, path)
        assert (status, body["error"]["code"]) == (404, "job_not_found"), path
    assert (await job_row(services, theirs)).status == "queued"
    status, body = await api.post(f"{OPS}/jobs/{job_id}/retry")
    assert (status, body["error"]["code"]) == (409, "job_not_retryable")
    assert (await client.get(f"{OPS}/queues")).status == 401
