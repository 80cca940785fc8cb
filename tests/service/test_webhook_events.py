"""Webhook events applied by a real arq worker through the same handlers and permission checks:
once per event however often it is delivered, never moving a user back to an older state,
denials recorded and not retried, failures retried until dead, and nothing acknowledged lost
when Redis or the database is down."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient
from arq.connections import ArqRedis

from service.adapters import db, orm
from service.adapters.direct import open_direct
from service.adapters.queue import Queue, deserialize, serialize
from service.adapters.sessions import Session
from service.adapters.webhook_intake import DeliveryStore
from service.app import create_app
from service.bootstrap import Services
from service.domain.model import Role
from service.inbound import apply_batch
from tests.conftest import Api, Org, bootstrap_org, free_port
from tests.service.test_webhook_support import (  # clean_jobs: an autouse fixture
    clean_jobs,  # noqa: F401
    event,
    iso,
    job_row,
    jobs_of,
    minutes_ago,
    quiet,
    records,
    sender,
    settled,
    standard_headers,
    stopped_cleanly,
)
from workers.jobs import reconcile_jobs
from workers.webhook_jobs import apply_webhook


@pytest.fixture
async def worker(worker: None, services: Services, org: Org) -> AsyncIterator[None]:
    """The shared worker, stopped only once every job of the test has finished."""
    started = datetime.now(UTC) - timedelta(seconds=1)
    yield
    await stopped_cleanly(services, org.id, started)


async def user_state(api: Api, user_id: str) -> str:
    return str((await api.ok("GET", f"/api/v1/users/{user_id}"))["state"])


async def test_terminated_admin_is_suspended_and_its_session_refused(api: Api, services: Services, org: Org,
                                                                     worker: None) -> None:
    user = await api.user()
    admin = await api.admin_from_user(user, Role.MANAGER)
    token = await services.sessions.open(Session("admin", admin["id"], org.id, 0, "admin_portal", "totp", "now"))
    headers = {"Authorization": f"Bearer {token}"}
    assert (await api.client.get("/auth/session", headers=headers)).status == 200
    hr = await sender(api, "hr")
    job = await settled(services, await hr.accepted(event("employee.terminated", email=user["email"])))
    assert job.status == "complete" and job.result["events"][0]["outcome"] == "applied"
    assert await user_state(api, user["id"]) == "SUSPENDED"
    response = await api.client.get("/auth/session", headers=headers)
    assert (response.status, (await response.json())["error"]["code"]) == (401, "session_ended")
    [record] = await records(services, org.id, event_type="user_suspended")
    assert record["success"] is True and record["resource"]["id"] == user["id"]
    assert record["initiated_by"] == {"id": hr.id, "type": "integration", "email": None, "administrator": False,
                                      "source": "hr", "name": (await hr_name(api, hr.id))}
    assert record["auth_method"] == "webhook_signature"


async def hr_name(api: Api, integration_id: str) -> str:
    listed = (await api.ok("GET", "/api/v1/integrations"))["results"]
    return str(next(i["name"] for i in listed if i["id"] == integration_id))


async def test_the_same_event_three_times_is_applied_once(api: Api, services: Services, org: Org,
                                                          worker: None) -> None:
    user = await api.user()
    hr = await sender(api, "hr")
    payload = event("employee.suspended", email=user["email"])
    answers = [await hr.send(payload, message_id="msg_same") for _ in range(3)]
    assert {a[0] for a in answers} == {202}
    assert len({a[1]["job_id"] for a in answers}) == 1
    assert [a[2].get("Idempotent-Replayed") for a in answers] == [None, "true", "true"]
    # The payload's own id identifies the event even under a new message id.
    status, again, _ = await hr.send(payload, message_id="msg_other")
    assert (status, again["job_id"]) == (202, answers[0][1]["job_id"])
    job = await settled(services, again["job_id"])
    assert (job.status, job.tries) == ("complete", 1)
    assert len(await records(services, org.id, event_type="user_suspended")) == 1
    assert len(await jobs_of(services, org.id)) == 1  # no other job: session keys go at commit


async def test_duplicates_stay_duplicates_after_arq_forgets_the_job(api: Api, services: Services, org: Org,
                                                                    worker: None) -> None:
    user = await api.user()
    hr = await sender(api, "hr")
    payload = event("employee.suspended", email=user["email"])
    job_id = await hr.accepted(payload)
    await settled(services, job_id)
    await quiet(services, org.id)  # before arq forgets everything
    await services.redis.flushdb()  # arq's job, result and in-progress keys are gone, as after days
    async with services.session_factory() as session, session.begin():
        await session.execute(sa.update(orm.jobs).where(orm.jobs.c.id == job_id).values(
            created_at=datetime.now(UTC) - timedelta(days=3)))
    await api.ok("POST", f"/api/v1/users/{user['id']}/activate")
    assert await hr.accepted(payload) == job_id
    assert (await job_row(services, job_id)).tries == 1
    assert await user_state(api, user["id"]) == "ACTIVATED"  # the old delivery was not applied again


async def test_a_late_return_never_reactivates_a_later_termination(api: Api, services: Services, org: Org,
                                                                   worker: None) -> None:
    user = await api.user()
    hr = await sender(api, "hr")
    terminated = await hr.accepted(event("employee.terminated", email=user["email"], at=minutes_ago(1)))
    assert (await settled(services, terminated)).status == "complete"
    late = await settled(services, await hr.accepted(event("employee.returned", email=user["email"],
                                                           at=minutes_ago(2))))
    assert late.status == "stale" and late.result["events"][0]["outcome"] == "stale"
    assert await user_state(api, user["id"]) == "SUSPENDED"
    # A return after the termination is news, and applies.
    back = await settled(services, await hr.accepted(event("employee.returned", email=user["email"])))
    assert back.status == "complete" and await user_state(api, user["id"]) == "ACTIVATED"
    assert [r["event_type"] for r in await records(services, org.id) if r["event_type"].startswith("user_")][-2:] \
        == ["user_suspended", "user_unsuspended"]


async def test_email_changes_out_of_order_keep_the_newest(api: Api, services: Services, worker: None) -> None:
    user = await api.user("first@acme.test")
    hr = await sender(api, "hr")
    newest = event("employee.email_changed", employee_id="E-1", email=user["email"], at=minutes_ago(1),
                   data={"email": "third@acme.test"})
    assert (await settled(services, await hr.accepted(newest))).status == "complete"
    # The HR system's employee id was learned with the first event; the old email no longer names anyone.
    older = event("employee.email_changed", employee_id="E-1", at=minutes_ago(3), data={"email": "second@acme.test"})
    assert (await settled(services, await hr.accepted(older))).status == "stale"
    assert (await api.ok("GET", f"/api/v1/users/{user['id']}"))["email"] == "third@acme.test"


async def test_denied_at_once_and_recorded(api: Api, services: Services, org: Org, worker: None) -> None:
    holder, plain = await api.user(), await api.user()
    await api.admin_from_user(holder, Role.READ_ONLY)
    help_desk = await sender(api, "hr", role="Help Desk")
    denied = await settled(services, await help_desk.accepted(event("employee.terminated", email=holder["email"])))
    assert (denied.status, denied.tries) == ("denied", 1)
    assert denied.error.startswith("permission_denied")
    assert await user_state(api, holder["id"]) == "ACTIVATED"
    allowed = await settled(services, await help_desk.accepted(event("employee.terminated", email=plain["email"])))
    assert allowed.status == "complete" and await user_state(api, plain["id"]) == "SUSPENDED"
    [refused] = [r for r in await records(services, org.id, event_type="user_suspended") if not r["success"]]
    assert refused["resource"]["id"] == holder["id"] and refused["initiated_by"]["id"] == help_desk.id
    shown = await api.ok("GET", f"/api/v1/jobs/{denied.id}")
    assert shown["status"] == "denied" and shown["error"].startswith("permission_denied")


async def test_a_failing_handler_is_retried_then_dead(api: Api, services: Services, worker: None) -> None:
    services.settings = dataclasses.replace(services.settings, job_max_tries=2)
    user, other = await api.user(), await api.user()
    hr = await sender(api, "hr")
    taken = event("employee.email_changed", email=user["email"], data={"email": other["email"]})
    job = await settled(services, await hr.accepted(taken))
    assert (job.status, job.tries) == ("dead", 2)
    shown = await api.ok("GET", f"/api/v1/jobs/{job.id}")
    assert shown["error"].startswith("HandlerFailure: email_taken: ") and "Traceback" not in shown["error"]
    assert shown["result"] is None and shown["finished"] is not None


async def test_a_failed_row_is_retried_by_its_own_job_until_dead(api: Api, services: Services, worker: None) -> None:
    """After the drain's try, each next one is the row's own arq job, deferred by the backoff."""
    services.settings = dataclasses.replace(services.settings, job_max_tries=3)
    user, other = await api.user(), await api.user()
    hr = await sender(api, "hr")
    taken = event("employee.email_changed", email=user["email"], data={"email": other["email"]})
    job = await settled(services, await hr.accepted(taken))
    assert (job.status, job.tries) == ("dead", 3)


async def test_a_job_run_again_after_its_commit_changes_nothing_more(api: Api, services: Services,
                                                                     org: Org) -> None:
    user = await api.user()
    directory = await sender(api, "directory")
    job_id = await directory.accepted(event("admin_role.assigned", email=user["email"], data={"role": "Manager"}))
    # A worker applies the event, and the job's row is claimed again (as if its ending were lost) ...
    claimed = await services.jobs.claim(job_id)
    assert claimed is not None and (await apply_batch(services, [claimed]))[job_id] == "complete"
    await reopen(services, job_id)
    # ... and arq runs the job again.
    assert await apply_webhook({"services": services}, job_id) == "complete"
    row = await job_row(services, job_id)
    assert row.status == "complete" and row.result["events"][0]["outcome"] == "applied"
    created = [r for r in await records(services, org.id, event_type="admin_create")
               if r["resource"].get("email") == user["email"]]
    assert len(created) == 1
    async with services.session_factory() as session:
        mails = (await session.execute(sa.select(orm.mail_outbox).where(
            orm.mail_outbox.c.organization_id == org.id, orm.mail_outbox.c.recipient == user["email"]))).all()
    assert len(mails) == 1
    assert await apply_webhook({"services": services}, job_id) == "already finished"


async def reopen(services: Services, job_id: str) -> None:
    async with services.session_factory() as session, session.begin():
        await session.execute(sa.update(orm.jobs).where(orm.jobs.c.id == job_id).values(status="queued",
                                                                                       result=None))


async def test_directory_events(api: Api, services: Services, org: Org, worker: None) -> None:
    user = await api.user()
    directory = await sender(api, "directory")

    async def deliver(kind: str, **data: Any) -> Any:
        return await settled(services, await directory.accepted(event(kind, email=user["email"], data=data)))

    assert (await deliver("admin_role.assigned", role="Manager")).status == "complete"
    assert (await api.ok("GET", f"/api/v1/users/{user['id']}"))["admin"]["role"] == "Manager"
    assert (await deliver("admin_role.assigned", role="Administrator")).status == "complete"
    assert (await api.ok("GET", f"/api/v1/users/{user['id']}"))["admin"]["role"] == "Administrator"
    assert (await deliver("admin_role.removed")).status == "complete"
    assert (await api.ok("GET", f"/api/v1/users/{user['id']}"))["admin"] is None
    nothing = await deliver("admin_role.removed")
    assert nothing.result["events"][0]["outcome"] == "unchanged"
    assert (await deliver("user.email_changed", email="renamed@acme.test")).status == "complete"
    user["email"] = "renamed@acme.test"
    assert (await deliver("user.deleted")).status == "complete"  # delete_mode "suspend": the user stays
    assert await user_state(api, user["id"]) == "SUSPENDED"
    assert (await deliver("user.activated")).status == "complete"
    deleting = await sender(api, "directory", delete_mode="delete")
    job = await settled(services, await deleting.accepted(event("user.deleted", email=user["email"])))
    assert job.status == "complete" and (await api.get(f"/api/v1/users/{user['id']}"))[0] == 404


async def test_a_role_assigned_to_a_user_with_an_admins_email_links_that_admin(api: Api, services: Services,
                                                                               org: Org, worker: None) -> None:
    """The seed's second procedure, from a directory: the existing admin is linked, takes the role,
    and its email is the user's spelling of it from then on."""
    classic, _ = await api.admin_with_key(Role.MANAGER)
    user = await api.user(classic["email"].upper())
    directory = await sender(api, "directory")
    assigned = event("admin_role.assigned", email=user["email"], data={"role": "Administrator"})
    assert (await settled(services, await directory.accepted(assigned))).status == "complete"
    linked = (await api.ok("GET", f"/api/v1/users/{user['id']}"))["admin"]
    assert (linked["id"], linked["role"]) == (classic["id"], "Administrator")
    [linking] = [r for r in await records(services, org.id, event_type="admin_update")
                 if any(c["field"] == "linked_user_id" for c in r.get("changes", []))]
    assert linking["resource"]["id"] == classic["id"]
    assert {"field": "role", "from": "Manager", "to": "Administrator"} in linking["changes"]
    assert (await api.ok("GET", f"/api/v1/admins/{classic['id']}"))["email"] == user["email"]


async def test_unknown_employees_in_a_list_are_skipped_and_the_others_applied(api: Api, services: Services,
                                                                              org: Org, worker: None) -> None:
    """A BambooHR delivery names contractors adminlink does not know beside the employees it does:
    theirs are skipped, the others' changes are made; none known at all is still a 422."""
    from tests.service.test_webhook_payloads import bamboo

    user = await api.user()
    hr = await sender(api, "hr", provider="bamboohr")
    leaving = {"timestamp": iso(datetime.now(UTC)), "changedFields": ["Status"]}
    known = {**leaving, "id": "B3", "fields": {"Status": "Inactive", "Work Email": user["email"]}}
    unknown = {**leaving, "id": "B99", "fields": {"Status": "Inactive", "Work Email": "contractor@acme.test"}}
    body = bamboo(unknown, known)
    status, answer, _ = await hr.raw(body, standard_headers(hr.secret, body))
    assert status == 202, answer
    job = await settled(services, answer["job_id"])
    assert job.status == "complete"
    assert [(e["outcome"], e["user_id"]) for e in job.result["events"]] == [("skipped", None), ("applied", user["id"])]
    assert await user_state(api, user["id"]) == "SUSPENDED"
    body = bamboo(unknown, {**unknown, "id": "B98", "fields": {"Status": "Inactive", "Work Email": "x@acme.test"}})
    status, answer, _ = await hr.raw(body, standard_headers(hr.secret, body))
    assert (status, answer["error"]["code"]) == (422, "unknown_subject")


async def test_bamboohr_and_personio_deliveries(api: Api, services: Services, worker: None) -> None:
    from tests.service.test_webhook_signatures import bamboo_body
    from tests.service.test_webhook_support import Sender, bamboo_headers

    user = await api.user()
    bamboo = await sender(api, "hr", provider="bamboohr")
    body = bamboo_body("4021", user["email"])
    response = await api.client.post(bamboo.path, data=body, headers=bamboo_headers(bamboo.secret, body))
    assert response.status == 202
    assert (await settled(services, (await response.json())["job_id"])).status == "complete"
    assert await user_state(api, user["id"]) == "SUSPENDED"
    other = await api.user()
    personio: Sender = await sender(api, "hr", provider="personio")
    delivery = {"company_id": "9001", "event_name": "employment.terminated", "occurred_at": datetime.now(UTC)
                .isoformat(), "payload": {"person": {"id": "p-1"}, "email": other["email"]}, "meta": {"event_id": "x1"}}
    assert (await settled(services, await personio.accepted(delivery))).status == "complete"
    assert await user_state(api, other["id"]) == "SUSPENDED"


async def test_job_status_is_scoped_to_the_organization(api: Api, services: Services, client: TestClient) -> None:
    user = await api.user()
    hr = await sender(api, "hr")
    job_id = await hr.accepted(event("employee.suspended", email=user["email"]))
    shown = await api.ok("GET", f"/api/v1/jobs/{job_id}")
    assert (shown["id"], shown["status"], shown["tries"], shown["function"]) == (job_id, "queued", 0, "apply_webhook")
    assert shown["created"] and shown["started"] is None and shown["result"] is None
    other = await bootstrap_org(services, "Other")
    assert (await Api(client, other.key).get(f"/api/v1/jobs/{job_id}"))[0] == 404
    assert (await api.get("/api/v1/jobs/nope"))[0] == 404


def without_redis(services: Services) -> Services:
    """The same services, with a queue whose Redis refuses connections."""
    dead = ArqRedis(host="127.0.0.1", port=free_port(), socket_connect_timeout=0.5, job_serializer=serialize,
                    job_deserializer=deserialize)
    return dataclasses.replace(services, redis=dead, queue=Queue(dead, services.settings.queue_name))


async def test_redis_down_answers_503_and_loses_nothing(api: Api, services: Services, org: Org,
                                                        aiohttp_client: Any, worker: None) -> None:
    user = await api.user()
    hr = await sender(api, "hr")
    down = await aiohttp_client(create_app(without_redis(services)))
    hr_down = type(hr)(down, "hr", {"id": hr.id, "secret": hr.secret})
    payload = event("employee.terminated", email=user["email"])
    status, body, headers = await hr_down.send(payload)
    assert (status, body["error"]["code"], headers["Retry-After"]) == (503, "temporarily_unavailable", "30")
    [row] = [r for r in await jobs_of(services, org.id) if r.function == "apply_webhook"]
    assert row.status == "queued"  # recorded: the reconciler hands it to arq once Redis is back
    async with services.session_factory() as session, session.begin():
        await session.execute(sa.update(orm.jobs).where(orm.jobs.c.id == row.id).values(
            created_at=datetime.now(UTC) - timedelta(minutes=1)))
    assert await reconcile_jobs({"services": services}) >= 1
    assert (await settled(services, row.id)).status == "complete"
    assert await user_state(api, user["id"]) == "SUSPENDED"
    assert await hr.accepted(payload) == row.id  # the sender's retry finds the same job


async def test_database_down_answers_503(api: Api, services: Services, aiohttp_client: Any, tmp_path: Any) -> None:
    user = await api.user()
    hr = await sender(api, "hr")
    broken = db.make_engine(f"sqlite+aiosqlite:///{tmp_path}/missing/dir/adminlink.db")
    # On PostgreSQL the receiver writes through asyncpg itself: that pool points nowhere too.
    on_postgresql = services.engine.dialect.name == "postgresql"
    broken_direct = await open_direct(f"postgresql://postgres@127.0.0.1:{free_port()}/gone") if on_postgresql else None
    down = dataclasses.replace(services, engine=broken, session_factory=db.session_factory(broken),
                               direct=broken_direct,
                               deliveries=DeliveryStore(broken, services.single_statements, broken_direct))
    client = await aiohttp_client(create_app(down))
    status, body, headers = await type(hr)(client, "hr", {"id": hr.id, "secret": hr.secret}).send(
        event("employee.terminated", email=user["email"]))
    assert (status, body["error"]["code"], headers["Retry-After"]) == (503, "temporarily_unavailable", "30")
    await broken.dispose()
    if broken_direct is not None:
        await broken_direct.close()
