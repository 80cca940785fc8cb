"""The jobs table: the durable record of every queued command and side effect. arq carries
only the row's id; the row says whether the work is done, so a redelivered job does nothing."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Protocol

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from service.adapters.direct import Direct
from service.adapters.orm import jobs
from service.domain.jobs import RUNNABLE, JobStatus
from service.domain.model import now


def backoff(tries: int) -> float:
    """Exponential backoff with full jitter: 1 s, 2 s, 4 s ... capped at 5 minutes."""
    return random.uniform(0, min(300.0, 2.0 ** (tries - 1)))


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended, when it is not plainly ``complete``: ``stale`` (nothing applied, newer
    news was there first), ``denied`` (refused by the permission table, never retried) or
    ``dead`` (cannot succeed, never retried)."""

    status: str
    result: Any = None
    error: str | None = None


@dataclass(frozen=True)
class ClaimedJob:
    """A job marked in progress: what a run needs of its row."""

    id: str
    organization_id: str | None
    function: str
    args: dict[str, Any]
    tries: int


# Built once: every job run executes these two, and building a statement costs more Python than
# running it.
CLAIM = (
    sa.update(jobs)
    .where(jobs.c.id == sa.bindparam("job_id"), jobs.c.status.in_(RUNNABLE))
    .values(status=JobStatus.IN_PROGRESS, tries=jobs.c.tries + 1, started_at=sa.bindparam("at"))
    .returning(jobs.c.id, jobs.c.organization_id, jobs.c.function, jobs.c.args, jobs.c.tries)
)
FINISH = (
    sa.update(jobs)
    .where(jobs.c.id == sa.bindparam("job_id"), jobs.c.status == JobStatus.IN_PROGRESS)
    .values(status=sa.bindparam("new_status"), result=sa.bindparam("new_result", type_=jobs.c.result.type),
            error=sa.bindparam("new_error"), finished_at=sa.bindparam("at"),
            defer_until=sa.func.coalesce(sa.bindparam("retry_at", type_=jobs.c.defer_until.type), jobs.c.defer_until))
)


# The same two for asyncpg (``adapters.direct``), on PostgreSQL: every job run sends both.
DIRECT_CLAIM = """
UPDATE jobs SET status = 'in_progress', tries = tries + 1, started_at = $2
WHERE id = $1 AND status = ANY($3::varchar[])
RETURNING id, organization_id, function, args, tries"""
DIRECT_FINISH = """
UPDATE jobs SET status = $2, result = $3::json, error = $4, finished_at = $5,
    defer_until = COALESCE($6, defer_until)
WHERE id = $1 AND status = 'in_progress'"""


class JobStore(Protocol):
    """The jobs table as a job run and the reconciler use it. Each method is one statement, run
    without a transaction around it (``db.single_statements``). Bootstrap picks the implementation
    once: ``DirectJobStore`` on PostgreSQL, ``SqlJobStore`` on any other database."""

    async def claim(self, job_id: str) -> ClaimedJob | None:
        """Marks the job in progress and counts the try; None if it is finished or unknown."""

    async def finish(self, job_id: str, status: str, *, result: Any = None, error: str | None = None,
                     retry_at: datetime | None = None) -> bool:
        """Records how a run ended; a failed run says when it is tried again (``defer_until``; a
        run that is not tried again keeps the moment its try became ready, for its time in queue).
        A row moved on meanwhile (aborted by ops) keeps its status: then the answer is False."""

    async def mark_enqueued(self, job_ids: list[str]) -> None: ...

    async def get(self, job_id: str) -> sa.Row[Any] | None: ...

    async def get_in(self, organization_id: str, job_id: str) -> sa.Row[Any] | None: ...

    async def depth(self) -> dict[tuple[str, str], int]:
        """Jobs waiting or running, by function and status, in every organization (the gauges)."""

    async def stranded(self, older_than: timedelta, limit: int = 500, *,
                       stuck_after: timedelta | None = None) -> list[sa.Row[Any]]:
        """Jobs that arq may not hold: queued ones it may never have received (Redis was down at
        commit), and, with ``stuck_after``, failed ones whose retry is long overdue and ones in
        progress far longer than a run may last (Redis lost them, or their worker died)."""


class SqlJobStore:
    """Every statement on SQLAlchemy."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def claim(self, job_id: str) -> ClaimedJob | None:
        async with self.engine.connect() as conn:
            claimed = (await conn.execute(CLAIM, {"job_id": job_id, "at": now()})).one_or_none()
        return None if claimed is None else ClaimedJob(*claimed)

    async def finish(self, job_id: str, status: str, *, result: Any = None, error: str | None = None,
                     retry_at: datetime | None = None) -> bool:
        async with self.engine.connect() as conn:
            finished = await conn.execute(FINISH, {"job_id": job_id, "new_status": status, "new_result": result,
                                                      "new_error": error, "at": now(), "retry_at": retry_at})
        return bool(finished.rowcount)

    async def mark_enqueued(self, job_ids: list[str]) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(sa.update(jobs).where(jobs.c.id.in_(job_ids)).values(enqueued_at=now()))

    async def get(self, job_id: str) -> sa.Row[Any] | None:
        async with self.engine.connect() as conn:
            return (await conn.execute(sa.select(jobs).where(jobs.c.id == job_id))).one_or_none()

    async def get_in(self, organization_id: str, job_id: str) -> sa.Row[Any] | None:
        async with self.engine.connect() as conn:
            return (await conn.execute(sa.select(jobs).where(
                jobs.c.organization_id == organization_id, jobs.c.id == job_id))).one_or_none()

    async def depth(self) -> dict[tuple[str, str], int]:
        query = (sa.select(jobs.c.function, jobs.c.status, sa.func.count())
                 .where(jobs.c.status.in_(RUNNABLE)).group_by(jobs.c.function, jobs.c.status))
        async with self.engine.connect() as conn:
            return {(function, status): int(count) for function, status, count in await conn.execute(query)}

    async def stranded(self, older_than: timedelta, limit: int = 500, *,
                       stuck_after: timedelta | None = None) -> list[sa.Row[Any]]:
        at: datetime = now()
        cutoff = at - older_than
        lost = [sa.and_(jobs.c.status == JobStatus.QUEUED, jobs.c.created_at < cutoff)]
        if stuck_after is not None:
            lost.append(sa.and_(jobs.c.status == JobStatus.FAILED, jobs.c.defer_until < cutoff))
            lost.append(sa.and_(jobs.c.status == JobStatus.IN_PROGRESS, jobs.c.started_at < at - stuck_after))
        async with self.engine.connect() as conn:
            query = (
                sa.select(jobs.c.id, jobs.c.function)
                .where(sa.or_(*lost))
                .order_by(jobs.c.created_at)
                .limit(limit)
            )
            return list(await conn.execute(query))


class DirectJobStore(SqlJobStore):
    """A job run's claim and finish on asyncpg itself (``adapters.direct``): every run sends both.
    The rest, which runs rarely, stays on SQLAlchemy."""

    def __init__(self, engine: AsyncEngine, direct: Direct) -> None:
        super().__init__(engine)
        self.direct = direct

    async def claim(self, job_id: str) -> ClaimedJob | None:
        async with self.direct.acquire() as conn:
            row = await conn.fetchrow(DIRECT_CLAIM, job_id, now(), RUNNABLE)
        return None if row is None else ClaimedJob(row["id"], row["organization_id"], row["function"],
                                                   json.loads(row["args"]), row["tries"])

    async def finish(self, job_id: str, status: str, *, result: Any = None, error: str | None = None,
                     retry_at: datetime | None = None) -> bool:
        encoded = None if result is None else json.dumps(result)
        async with self.direct.acquire() as conn:
            answer = await conn.execute(DIRECT_FINISH, job_id, status, encoded, error, now(), retry_at)
        return bool(answer != "UPDATE 0")


def job_store(engine: AsyncEngine, direct: Direct | None) -> JobStore:
    """The store for the database at hand: asyncpg's own pool exists on PostgreSQL only."""
    return SqlJobStore(engine) if direct is None else DirectJobStore(engine, direct)


def _scoped(org_id: str | None) -> list[sa.ColumnElement[bool]]:
    """The API always passes the caller's organization; only the host's CLI may pass None."""
    return [jobs.c.organization_id == org_id] if org_id is not None else []


class JobRows:
    """The jobs table as ops read and steer it, in a unit of work's transaction
    (``service.ops.repository.JobRepository``)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, org_id: str | None, job_id: str) -> Any | None:
        query = sa.select(jobs).where(*_scoped(org_id), jobs.c.id == job_id)
        return (await self.session.execute(query)).one_or_none()

    async def move(self, job_id: str, was: str, **values: Any) -> bool:
        """Changes the row only if its status is still ``was``; False if someone moved it."""
        moved = await self.session.execute(
            sa.update(jobs).where(jobs.c.id == job_id, jobs.c.status == was).values(**values)
        )
        return bool(moved.rowcount == 1)  # type: ignore[attr-defined]

    async def page(self, org_id: str | None, *, status: str | None, function: str | None,
                   since: datetime | None, after: tuple[datetime, str] | None, limit: int) -> list[Any]:
        """Newest first; with ``after`` (created at, id), the jobs that come after that one."""
        where = _scoped(org_id)
        if status:
            where.append(jobs.c.status == status)
        if function:
            where.append(jobs.c.function == function)
        if since:
            where.append(jobs.c.created_at >= since)
        if after:
            created, job_id = after
            where.append(sa.or_(jobs.c.created_at < created,
                                sa.and_(jobs.c.created_at == created, jobs.c.id < job_id)))
        select = sa.select(jobs).where(*where).order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
        return list(await self.session.execute(select.limit(limit)))

    async def status_counts(self, org_id: str | None, at: datetime, statuses: tuple[str, ...]) -> list[Any]:
        """(function, status, deferred, count); a queued job deferred past ``at`` is counted apart."""
        deferred = sa.and_(jobs.c.status == JobStatus.QUEUED, jobs.c.defer_until.is_not(None),
                           jobs.c.defer_until > at)
        query = (
            sa.select(jobs.c.function, jobs.c.status, deferred.label("deferred"), sa.func.count())
            .where(*_scoped(org_id), jobs.c.status.in_(statuses))
            .group_by(jobs.c.function, jobs.c.status, deferred)
        )
        return list(await self.session.execute(query))

    async def oldest_ready(self, org_id: str | None, at: datetime) -> list[tuple[str, Any]]:
        """Per function, when its oldest queued job ready by ``at`` became ready."""
        ready = sa.func.coalesce(jobs.c.defer_until, jobs.c.created_at)
        query = (
            sa.select(jobs.c.function, sa.func.min(ready))
            .where(*_scoped(org_id), jobs.c.status == JobStatus.QUEUED, ready <= at)
            .group_by(jobs.c.function)
        )
        return [(function, oldest) for function, oldest in await self.session.execute(query)]

    async def completed(self, org_id: str | None, at: datetime, windows: tuple[timedelta, ...]) -> list[Any]:
        """Per function, the jobs completed within each window before ``at`` (the widest bounds the scan)."""
        counts = [sa.func.sum(sa.case((jobs.c.finished_at >= at - span, 1), else_=0)) for span in windows]
        query = (
            sa.select(jobs.c.function, *counts)
            .where(*_scoped(org_id), jobs.c.status == JobStatus.COMPLETE, jobs.c.finished_at >= at - max(windows))
            .group_by(jobs.c.function)
        )
        return list(await self.session.execute(query))

    async def first_tries_completed(self, org_id: str | None, since: datetime, limit: int) -> list[Any]:
        """The newest first tries completed since ``since``: function, created_at, defer_until, started_at."""
        query = (
            sa.select(jobs.c.function, jobs.c.created_at, jobs.c.defer_until, jobs.c.started_at)
            .where(*_scoped(org_id), jobs.c.status == JobStatus.COMPLETE, jobs.c.finished_at >= since,
                   jobs.c.tries == 1, jobs.c.started_at.is_not(None))
            .order_by(jobs.c.finished_at.desc()).limit(limit)
        )
        return list(await self.session.execute(query))
