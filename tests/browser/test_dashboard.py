"""The ops dashboard in a real browser: headless Chromium (Debian's) driven by Playwright. An
admin sent to the admin portal's sign-in comes back to the queues, opens a dead job, retries it,
aborts it, then signs out; a screenshot of each page is kept in test-artifacts/."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pyotp
import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient
from playwright.async_api import async_playwright

from service.adapters import orm
from service.bootstrap import Services
from service.domain.commands import Actor
from service.domain.model import Role
from tests.browser.harness import shot
from tests.conftest import Org

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# CI (.ci/run) installs Chromium and requires these tests; elsewhere, without Chromium, they are
# skipped with this reason rather than failing a fresh machine's `make test`.
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("ADMINLINK_TEST_REQUIRE_BROWSER"),
    reason="Debian's chromium is not installed (apt-get install chromium); CI installs it and requires these tests")


async def dead_job(services: Services, org: Org) -> str:
    async with services.uow(Actor(org.id, "test", "system", Role.BILLING)) as uow:
        job_id = await uow.add_job("send_email", {"mail_id": "welcome-mail"})
        uow._new_jobs = []
        await uow.commit()
    async with services.session_factory() as session, session.begin():
        await session.execute(sa.update(orm.jobs).where(orm.jobs.c.id == job_id).values(
            status="dead", tries=8, error="Traceback (most recent call last):\nSMTPConnectError: refused"))
    return job_id


def test_chromium_is_installed() -> None:
    assert Path(CHROMIUM).exists(), "Debian's chromium is needed: apt-get install chromium"


async def test_an_admin_retries_and_aborts_a_dead_job_in_chromium(client: TestClient, services: Services,
                                                                  org: Org) -> None:
    job_id = await dead_job(services, org)
    base = str(client.make_url("/")).rstrip("/")
    await asyncio.to_thread(ARTIFACTS.mkdir, exist_ok=True)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            context = await browser.new_context(viewport={"width": 1280, "height": 800})
            page = await context.new_page()
            await page.goto(base + "/ops/")  # not signed in: the admin portal's sign-in, then back
            assert "/admin/sign-in" in page.url
            await page.fill("#identifier", org.email)
            await page.fill("#password", org.password)
            await page.click("#sign-in")
            await page.fill("#code", pyotp.TOTP(org.totp_secret).now())
            await page.click("#verify-totp")
            assert page.url == base + "/ops/"
            assert "send_email" in await page.inner_text("#queues")
            assert job_id in await page.inner_text("#dead-jobs")
            await shot(page, "ops-dashboard")

            await page.click(f"#dead-jobs a:text('{job_id}')")
            assert "SMTPConnectError" in await page.inner_text("#error")
            await page.click("#retry")
            assert "Retry requested" in await page.inner_text("#flash")
            await shot(page, "ops-job-retried")

            await page.click("#abort")
            assert "aborted" in await page.inner_text("#flash")
            assert await page.locator("#abort").count() == 0

            await page.click("#sign-out")
            assert page.url.endswith("/admin/sign-in")
            await page.goto(base + "/ops/")
            assert "/admin/sign-in" in page.url
        finally:
            await browser.close()
    async with services.session_factory() as session:
        status = await session.scalar(sa.select(orm.jobs.c.status).where(orm.jobs.c.id == job_id))
    assert status == "aborted"
    assert (await asyncio.to_thread((ARTIFACTS / "ops-dashboard.png").stat)).st_size > 10_000
