"""The ops dashboard over HTTP: who may see it, what it shows (escaped), and its retry and abort
forms (which need the session's CSRF token)."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from service.adapters import orm
from service.adapters.sessions import Session
from service.bootstrap import Services
from service.domain.commands import Actor
from service.domain.model import Role
from tests.conftest import Api, Org
from tests.service.ops_support import tidy  # noqa: F401 (an autouse fixture)


async def admin_session(services: Services, org: Org, admin_id: str, portal: str = "admin_portal") -> str:
    return await services.sessions.open(Session("admin", admin_id, org.id, 0, portal, "totp", "now"))


async def add_job(services: Services, org: Org, args: dict[str, str], status: str = "queued") -> str:
    async with services.uow(Actor(org.id, "test", "system", Role.BILLING)) as uow:
        job_id = await uow.add_job("send_email", args)
        uow._new_jobs = []
        await uow.commit()
    async with services.session_factory() as session, session.begin():
        await session.execute(sa.update(orm.jobs).where(orm.jobs.c.id == job_id).values(status=status, tries=8,
                                                                                           error="Boom <b>x</b>"))
    return job_id


async def status_of(services: Services, job_id: str) -> str:
    async with services.session_factory() as session:
        return str(await session.scalar(sa.select(orm.jobs.c.status).where(orm.jobs.c.id == job_id)))


async def test_the_dashboard_needs_an_admin_portal_session_of_an_ops_role(api: Api, client: TestClient,
                                                                         services: Services, org: Org) -> None:
    response = await client.get("/ops/jobs?status=dead", allow_redirects=False)
    location = urlsplit(response.headers["Location"])
    assert (response.status, location.path) == (303, "/admin/sign-in")
    assert parse_qs(location.query) == {"next": ["/ops/jobs?status=dead"]}  # and back after signing in
    manager, _ = await api.admin_with_key(Role.MANAGER)
    cookie = {"adminlink_session": await admin_session(services, org, manager["id"])}
    response = await client.get("/ops/", cookies=cookie)
    assert response.status == 403 and "Administrator" in await response.text()
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    assert 'id="sign-out"' in await response.text()
    user_portal = {"adminlink_session": await admin_session(services, org, org.admin_id, "user_portal")}
    assert (await client.get("/ops/", cookies=user_portal, allow_redirects=False)).status == 303
    api_key_only = await client.get("/ops/", headers=org.headers, allow_redirects=False)
    assert api_key_only.status == 303


async def test_queues_and_jobs_are_shown_escaped(client: TestClient, services: Services, org: Org) -> None:
    job_id = await add_job(services, org, {"mail_id": "<script>alert(1)</script>", "password": "hunter2hunter2"},
                           status="dead")
    cookie = {"adminlink_session": await admin_session(services, org, org.admin_id)}
    page = await (await client.get("/ops/", cookies=cookie)).text()
    assert 'id="queues"' in page and "send_email" in page and job_id in page
    detail = await client.get(f"/ops/jobs/{job_id}", cookies=cookie)
    text = await detail.text()
    assert detail.status == 200
    assert "<script>alert" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "hunter2" not in text and "[redacted]" in text and "Boom &lt;b&gt;x&lt;/b&gt;" in text
    assert 'id="retry"' in text and 'id="abort"' not in text
    listing = await (await client.get("/ops/jobs?status=dead", cookies=cookie)).text()
    assert job_id in listing
    assert (await client.get("/ops/jobs?status=bogus", cookies=cookie)).status == 400
    assert (await client.get("/ops/jobs/nope", cookies=cookie)).status == 404


async def test_retry_and_abort_forms_need_the_csrf_token(client: TestClient, services: Services,
                                                         org: Org) -> None:
    dead = await add_job(services, org, {"mail_id": "m"}, status="dead")
    cookie = {"adminlink_session": await admin_session(services, org, org.admin_id)}
    page = await (await client.get(f"/ops/jobs/{dead}", cookies=cookie)).text()
    token = re.search(r'name="csrf" value="([0-9a-f]+)"', page)
    assert token is not None
    for data in ({}, {"csrf": "0" * 64}):
        refused = await client.post(f"/ops/jobs/{dead}/retry", data=data, cookies=cookie)
        assert refused.status == 403
    assert await status_of(services, dead) == "dead"
    done = await client.post(f"/ops/jobs/{dead}/retry", data={"csrf": token.group(1)}, cookies=cookie,
                             allow_redirects=False)
    assert done.status == 303 and done.headers["Location"] == f"/ops/jobs/{dead}?done=retry"
    assert await status_of(services, dead) == "queued"
    shown = await (await client.get(done.headers["Location"], cookies=cookie)).text()
    assert "Retry requested" in shown and 'id="abort"' in shown
    aborted = await client.post(f"/ops/jobs/{dead}/abort", data={"csrf": token.group(1)}, cookies=cookie,
                                allow_redirects=False)
    assert aborted.status == 303 and await status_of(services, dead) == "aborted"
    again = await client.post(f"/ops/jobs/{dead}/abort", data={"csrf": token.group(1)}, cookies=cookie)
    assert again.status == 409 and "only queued or running jobs" in await again.text()
    async with services.session_factory() as session:
        bodies = [r.body for r in await session.execute(sa.select(orm.insights_events.c.body).where(
            orm.insights_events.c.organization_id == org.id,
            orm.insights_events.c.event_type.in_(("job_retry", "job_abort"))))]
    assert {(b["event_type"], b["success"], b["auth_method"], b["initiated_by"]["source"]) for b in bodies} == {
        ("job_retry", True, "session", "admin_portal"), ("job_abort", True, "session", "admin_portal")}


async def test_a_form_body_that_is_not_utf8_is_a_400_page(client: TestClient, services: Services, org: Org) -> None:
    dead = await add_job(services, org, {"mail_id": "m"}, status="dead")
    cookie = {"adminlink_session": await admin_session(services, org, org.admin_id)}
    # Raw bytes that are not UTF-8 are refused; escaped ones decode to U+FFFD, a wrong token.
    for body, status in ((b"csrf=\xff", 400), (b"csrf=%ff%00", 403)):
        refused = await client.post(f"/ops/jobs/{dead}/retry", data=body, cookies=cookie,
                                    headers={"Content-Type": "application/x-www-form-urlencoded"})
        assert (refused.status, refused.content_type) == (status, "text/html"), await refused.text()
    assert await status_of(services, dead) == "dead"
