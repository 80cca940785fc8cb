"""Webhook events applied in batches: deliveries recorded while no worker runs, then drained in
one batch, as a worker's drain job does. Each event of a batch stands alone: a refused event, a
conflict or a failing handler in the middle leaves the others applied and gets its own outcome
and retry; a database error no event explains falls back to one job at a time."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient
from sqlalchemy.exc import OperationalError

from service import inbound, metrics
from service.adapters import orm
from service.adapters.webhook_batch import WebhookBatch, Writes
from service.bootstrap import Services
from service.domain.model import Role
from service.logging import JsonFormatter
from tests.conftest import Api, Org
from tests.service.test_ops_cli import in_process
from tests.service.test_webhook_support import (  # clean_jobs: an autouse fixture
    Sender,
    bamboo_headers,
    clean_jobs,  # noqa: F401
    event,
    iso,
    job_row,
    minutes_ago,
    records,
    sender,
)


async def state(api: Api, user: dict[str, Any]) -> str:
    return str((await api.ok("GET", f"/api/v1/users/{user['id']}"))["state"])


async def drained(services: Services, org: Org, integration: Sender, expected: int) -> None:
    """One drain of the integration takes every waiting job, as one batch."""
    assert await inbound.drain(services, org.id, integration.id) == expected
    assert await inbound.drain(services, org.id, integration.id) == 0


async def test_waiting_events_are_applied_in_one_batch_in_order(api: Api, services: Services, org: Org) -> None:
    users = [await api.user(mfa=False) for _ in range(4)]
    hr = await sender(api, "hr")
    jobs = [await hr.accepted(event("employee.terminated", email=u["email"])) for u in users]
    # One user twice, out of order: the older news, applied after the newer, is stale.
    newer = await hr.accepted(event("employee.returned", email=users[0]["email"], at=minutes_ago(0)))
    older = await hr.accepted(event("employee.terminated", email=users[0]["email"], at=minutes_ago(5)))
    batches_before = await batch_count(services)

    await drained(services, org, hr, len(jobs) + 2)

    assert await batch_count(services) == batches_before + 1
    assert [(await job_row(services, j)).status for j in [*jobs, newer, older]] == ["complete"] * 5 + ["stale"]
    assert [await state(api, u) for u in users] == ["ACTIVATED"] + ["SUSPENDED"] * 3
    suspended = [r["resource"]["id"] for r in await records(services, org.id, event_type="user_suspended")]
    assert sorted(suspended) == sorted(u["id"] for u in users)  # one record each, the stale one none


async def batch_count(services: Services) -> int:
    totals = metrics.parse_job_totals(await services.redis.hgetall(metrics.JOBS_KEY))
    return totals.batches(inbound.APPLY_FUNCTION)[0]


async def test_a_denied_event_mid_batch_is_recorded_and_the_others_applied(api: Api, services: Services,
                                                                          org: Org) -> None:
    before, holder, after = await api.user(mfa=False), await api.user(), await api.user(mfa=False)
    await api.admin_from_user(holder, Role.READ_ONLY)
    help_desk = await sender(api, "hr", role="Help Desk")
    jobs = [await help_desk.accepted(event("employee.terminated", email=u["email"])) for u in (before, holder, after)]
    # The refused user's next event, in the same batch, still comes after the refusal.
    renamed = await help_desk.accepted(event("employee.email_changed", email=holder["email"],
                                             data={"email": "renamed-holder@acme.test"}))

    await drained(services, org, help_desk, 4)

    statuses = [(await job_row(services, j)).status for j in [*jobs, renamed]]
    assert statuses == ["complete", "denied", "complete", "denied"]
    assert [await state(api, u) for u in (before, holder, after)] == ["SUSPENDED", "ACTIVATED", "SUSPENDED"]
    suspended = await records(services, org.id, event_type="user_suspended")
    assert sorted((r["resource"]["id"], r["success"]) for r in suspended) == sorted(
        [(before["id"], True), (holder["id"], False), (after["id"], True)])
    denied = await job_row(services, jobs[1])
    assert denied.tries == 1 and denied.result["events"][0]["outcome"] == "denied"
    assert await outcomes(services, jobs) == {jobs[0]: "applied", jobs[1]: "denied", jobs[2]: "applied"}


async def outcomes(services: Services, job_ids: list[str]) -> dict[str, str]:
    table = orm.webhook_event_outcomes
    async with services.session_factory() as session:
        rows = await session.execute(sa.select(table.c.job_id, table.c.outcome).where(table.c.job_id.in_(job_ids)))
        return {job_id: outcome for job_id, outcome in rows}


async def test_a_conflict_mid_batch_fails_its_job_alone_and_is_retried(api: Api, services: Services,
                                                                       org: Org) -> None:
    first, changing, taken, last = [await api.user(mfa=False) for _ in range(4)]
    hr = await sender(api, "hr")
    jobs = [await hr.accepted(event("employee.terminated", email=first["email"])),
            await hr.accepted(event("employee.email_changed", email=changing["email"],
                                    data={"email": taken["email"]})),
            await hr.accepted(event("employee.terminated", email=last["email"]))]

    await drained(services, org, hr, 3)

    ok, conflict, ok_too = [await job_row(services, j) for j in jobs]
    assert (ok.status, ok_too.status) == ("complete", "complete")
    assert (conflict.status, conflict.tries) == ("failed", 1)
    assert conflict.error.strip().endswith("HandlerFailure: email_taken: another user has this email")
    assert conflict.defer_until is not None  # its own retry, with backoff
    assert [await state(api, u) for u in (first, last)] == ["SUSPENDED", "SUSPENDED"]
    assert (await api.ok("GET", f"/api/v1/users/{changing['id']}"))["email"] == changing["email"]


async def test_a_failing_handler_mid_batch_leaves_the_rest_of_its_delivery_undone(
        api: Api, services: Services, org: Org) -> None:
    """A delivery of several events (BambooHR's list) stops at its failing event, as one job."""
    applied, gone, never, other = [await api.user(mfa=False) for _ in range(4)]
    bamboo = await sender(api, "hr", provider="bamboohr")
    body = json.dumps({"employees": [
        {"id": f"B{n}", "timestamp": iso(minutes_ago(1)), "changedFields": ["Status"],
         "fields": {"Status": "Inactive", "Work Email": u["email"]}} for n, u in enumerate((applied, gone, never))],
    }).encode()
    status, answer, _ = await bamboo.raw(body, bamboo_headers(bamboo.secret, body))
    assert status == 202
    listed = answer["job_id"]
    alone_body = json.dumps({"employees": [{"id": "B9", "timestamp": iso(minutes_ago(1)), "changedFields": ["Status"],
                                            "fields": {"Status": "Inactive", "Work Email": other["email"]}}]}).encode()
    alone = (await bamboo.raw(alone_body, bamboo_headers(bamboo.secret, alone_body)))[1]["job_id"]
    await api.call("DELETE", f"/api/v1/users/{gone['id']}")  # the handler will not find it

    await drained(services, org, bamboo, 2)

    failed, done = await job_row(services, listed), await job_row(services, alone)
    assert (failed.status, done.status) == ("failed", "complete")
    assert failed.error.strip().endswith("HandlerFailure: user_not_found: no such user")
    assert [await state(api, u) for u in (applied, never, other)] == ["SUSPENDED", "ACTIVATED", "SUSPENDED"]
    # Its retry skips the event done before, and fails again at the same one.
    assert await outcomes(services, [listed]) == {listed: "applied"}


async def test_a_database_error_no_event_explains_applies_the_batch_one_job_at_a_time(
        api: Api, services: Services, org: Org, monkeypatch: pytest.MonkeyPatch) -> None:
    users = [await api.user(mfa=False) for _ in range(3)]
    hr = await sender(api, "hr")
    jobs = [await hr.accepted(event("employee.terminated", email=u["email"])) for u in users]
    commit, sizes = WebhookBatch.commit, []

    async def fails_when_several(batch: WebhookBatch) -> Writes:
        sizes.append(len(batch.jobs))
        if len(batch.jobs) > 1:
            raise OperationalError("COMMIT", {}, Exception("the connection was lost"))
        return await commit(batch)

    monkeypatch.setattr(WebhookBatch, "commit", fails_when_several)
    await drained(services, org, hr, 3)

    assert sizes == [3, 1, 1, 1]
    assert [(await job_row(services, j)).status for j in jobs] == ["complete"] * 3
    assert [await state(api, u) for u in users] == ["SUSPENDED"] * 3
    assert len(await records(services, org.id, event_type="user_suspended")) == 3


class Lines(logging.Handler):
    """Log lines formatted as they are written (the batch's marks are read then)."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[dict[str, Any]] = []
        self.formatter = JsonFormatter()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


async def test_operators_see_batches_in_metrics_logs_and_stats(api: Api, services: Services, org: Org,
                                                               client: TestClient) -> None:
    users = [await api.user(mfa=False) for _ in range(3)]
    hr = await sender(api, "hr")
    jobs = [await hr.accepted(event("employee.terminated", email=u["email"])) for u in users]
    lines, logger = Lines(), logging.getLogger("service.inbound")
    logger.addHandler(lines)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        await drained(services, org, hr, 3)
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)

    [told] = [line for line in lines.lines if line["msg"].startswith("webhook batch of 3 jobs applied")]
    assert told["batch_id"] == f"{jobs[0]}+3" and told["batch_size"] == 3
    response = await client.get("/metrics", headers={"x-api-key": api.key})
    text = await response.text()
    assert response.status == 200
    wanted = 'adminlink_job_batch_size_count{function="apply_webhook"}'
    [count] = [line for line in text.splitlines() if line.startswith(wanted)]
    assert float(count.split()[-1]) >= 1
    out = json.loads(await in_process(services.settings, "jobs", "stats", "--org", org.id, "--json"))
    [webhooks] = [q for q in out["queues"] if q["queue"] == "apply_webhook"]
    if services.settings.redis_url:  # the CLI reads the workers' counters in the same Redis
        assert webhooks["batches"]["count"] >= 1 and webhooks["batches"]["mean_size"] >= 1
    else:  # an embedded Redis is the process's own: the CLI cannot see the workers' counters
        assert webhooks["batches"] == {"count": None, "mean_size": None}
