"""Stopping an in-process worker (SIGTERM to `adminlink serve` or `adminlink worker`): the job it is
running finishes within the grace period; one that cannot is cut off without the stop failing, and
stays in arq's queue to run again."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller

from service import config
from service.bootstrap import Services
from tests.conftest import Api, Mailbox, free_port, suite_settings
from tests.service.ops_support import tidy  # noqa: F401 (an autouse fixture)
from tests.service.test_ops_api import mail_job, wait_for_status
from workers.running import InProcessWorker


@pytest.fixture
def smtp_port() -> int:
    return free_port()


@pytest.fixture
def settings(database_url: str, tmp_path: Path, smtp_port: int) -> config.Settings:
    return suite_settings(database_url, tmp_path, smtp_url=f"smtp://127.0.0.1:{smtp_port}")


class SlowMailbox(Mailbox):
    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd API)
        await asyncio.sleep(1.0)
        return await super().handle_DATA(server, session, envelope)


async def test_a_running_job_finishes_before_the_worker_stops(api: Api, services: Services, smtp_port: int,
                                                              org: Any) -> None:
    mailbox = SlowMailbox([])
    smtp = Controller(mailbox, hostname="127.0.0.1", port=smtp_port)
    smtp.start()
    try:
        worker = InProcessWorker(services)
        worker.start()
        job_id, email = await mail_job(api, services, org)
        await wait_for_status(services, job_id, "in_progress")
        await worker.stop(grace=10)
        assert (await wait_for_status(services, job_id, "complete", seconds=1)).tries == 1
        # (The worker's reconciler may also send mail that earlier tests left waiting.)
        assert [email] in [m.rcpt_tos for m in mailbox.messages]
    finally:
        smtp.stop()


async def test_a_job_past_the_grace_period_is_cut_off_and_stays_queued(api: Api, services: Services,
                                                                        smtp_port: int, org: Any) -> None:
    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()
        writer.close()

    hung = await asyncio.start_server(never_answer, "127.0.0.1", smtp_port)
    try:
        worker = InProcessWorker(services)
        worker.start()
        job_id, _ = await mail_job(api, services, org)
        await wait_for_status(services, job_id, "in_progress")
        await worker.stop(grace=0.2)  # returns; the cancelled job's CancelledError stays inside
        assert await services.redis.zscore(services.settings.queue_name, job_id) is not None
    finally:
        hung.close()
