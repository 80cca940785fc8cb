"""Shared by the ops tests: a worker that drains before it stops, and tidying of the job rows a
test leaves waiting (the suite shares one database, and the reconciler of any later worker would
otherwise hand them to arq in the middle of another test)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import sqlalchemy as sa

from service.adapters import orm
from service.bootstrap import Services
from service.cli import in_process_worker
from service.domain.model import now


class Worker:
    """A real in-process arq worker on the app's Redis, stopped only once its jobs are done."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.task: asyncio.Task[Any] | None = None
        self.worker: Any = None

    async def start(self) -> None:
        self.worker = in_process_worker(self.services)
        self.task = asyncio.create_task(self.worker.main())

    async def stop(self) -> None:
        if self.task is None:
            return
        for _ in range(200):  # let running jobs (and the hooks after them) finish
            if not any(not t.done() for t in self.worker.tasks.values()):
                break
            await asyncio.sleep(0.05)
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        await self.worker.close()
        self.task = None


@asynccontextmanager
async def draining_worker(services: Services) -> AsyncIterator[Worker]:
    worker = Worker(services)
    try:
        yield worker
    finally:
        await worker.stop()


@asynccontextmanager
async def tidy_jobs(services: Services) -> AsyncIterator[None]:
    """Aborts the rows created meanwhile that are still waiting."""
    started = now()
    yield
    async with services.session_factory() as session, session.begin():
        await session.execute(sa.update(orm.jobs).where(orm.jobs.c.created_at >= started,
                                                        orm.jobs.c.status.in_(("queued", "failed")))
                              .values(status="aborted", error="left waiting by a test"))
