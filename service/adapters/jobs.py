"""The jobs table: the durable record of every queued command and side effect. arq carries
only the row's id; the row says whether the work is done, so a redelivered job does nothing."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.adapters.orm import jobs
from service.domain.model import now

RUNNABLE = ("queued", "in_progress", "failed")


class JobStore:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self.session_factory = session_factory

    async def claim(self, job_id: str) -> sa.Row[Any] | None:
        """Marks the job in progress and counts the try; None if it is finished or unknown."""
        async with self.session_factory() as session, session.begin():
            claimed = await session.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id, jobs.c.status.in_(RUNNABLE))
                .values(status="in_progress", tries=jobs.c.tries + 1, started_at=now())
            )
            if not claimed.rowcount:  # type: ignore[attr-defined]
                return None
            return (await session.execute(sa.select(jobs).where(jobs.c.id == job_id))).one()

    async def finish(self, job_id: str, status: str, *, result: Any = None, error: str | None = None) -> None:
        async with self.session_factory() as session, session.begin():
            await session.execute(
                sa.update(jobs)
                .where(jobs.c.id == job_id)
                .values(status=status, result=result, error=error, finished_at=now())
            )

    async def mark_enqueued(self, job_ids: list[str]) -> None:
        async with self.session_factory() as session, session.begin():
            await session.execute(sa.update(jobs).where(jobs.c.id.in_(job_ids)).values(enqueued_at=now()))

    async def get(self, job_id: str) -> sa.Row[Any] | None:
        async with self.session_factory() as session:
            return (await session.execute(sa.select(jobs).where(jobs.c.id == job_id))).one_or_none()

    async def stranded(self, older_than: timedelta, limit: int = 500) -> list[sa.Row[Any]]:
        """Queued jobs that arq may never have received (Redis was down at commit)."""
        cutoff: datetime = now() - older_than
        async with self.session_factory() as session:
            query = (
                sa.select(jobs.c.id, jobs.c.function)
                .where(jobs.c.status == "queued", jobs.c.created_at < cutoff)
                .order_by(jobs.c.created_at)
                .limit(limit)
            )
            return list(await session.execute(query))
