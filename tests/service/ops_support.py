"""Shared by the ops tests: a worker that drains before it stops, and tidying of the job rows a
test leaves waiting (the suite shares one database, and the reconciler of any later worker would
otherwise hand them to arq in the middle of another test)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import sqlalchemy as sa

from service.adapters import orm
from service.bootstrap import Services
from service.domain.model import now
from workers.running import InProcessWorker


class Worker:
    """A real in-process arq worker on the app's Redis, started when the test says so and stopped
    only once its jobs are done."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.running: InProcessWorker | None = None

    async def start(self) -> None:
        self.running = InProcessWorker(self.services)
        self.running.start()

    async def stop(self) -> None:
        if self.running is not None:
            await self.running.stop(grace=10)
            self.running = None


@pytest.fixture(autouse=True)
async def tidy(services: Services) -> AsyncIterator[None]:
    """Afterwards, the rows the test created that are still waiting are aborted (autouse where
    imported)."""
    started = now()
    yield
    async with services.session_factory() as session, session.begin():
        await session.execute(sa.update(orm.jobs).where(orm.jobs.c.created_at >= started,
                                                        orm.jobs.c.status.in_(("queued", "failed")))
                              .values(status="aborted", error="left waiting by a test"))
