"""Job queues for ops: statistics, listings, a job's detail, retry and abort.

arq keeps a failed job only until its result expires and has no listing, retry or dead-letter
view, so all of this stands on the jobs table, the durable record of every job. Redis is then
brought in line with the row:

- The row decides. A job runs only if its row can be claimed (queued, in progress or failed), so
  an aborted row is never run, whatever arq still holds.
- Retry puts a failed or dead row back to work. arq refuses a job id while it keeps the job or
  its result, so the old result (and any stale abort mark) is removed before the id is enqueued
  again; the reconciler enqueues the row later if Redis cannot take it now.
- Abort never calls ``arq.jobs.Job.abort``: on an id that is not running, arq keeps the mark and
  aborts the *next* job with that id (a retry of this one). A queued job is taken out of arq's
  queue instead; only a job that a worker is running right now gets arq's abort mark, and a
  retry clears any mark left behind.

Every retry and abort is recorded in Directory Insights (``job_retry``, ``job_abort``) with the
acting admin, in the same transaction as the row's change; a refused one is recorded with
``success: false``.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix
from sqlalchemy.ext.asyncio import AsyncSession

from service import views
from service.adapters import orm
from service.adapters.unit_of_work import UnitOfWork
from service.domain.commands import Actor, Command
from service.domain.errors import Conflict, InvalidRequest, NotFound
from service.domain.events import Change, Recorded, Resource
from service.domain.jobs import ABORTABLE, RETRYABLE, RUNNABLE, JobMove, JobStatus, destination
from service.domain.model import Role, aware, now
from service.handlers import authorize
from service.logging import redact, redact_text
from service.policy import Action
from service.views import iso

if TYPE_CHECKING:
    from service.bootstrap import Services

jobs = orm.jobs

STATUSES = tuple(status.value for status in JobStatus)  # as the API, dashboard and CLI name them
COUNTED = (*RUNNABLE, JobStatus.DEAD)  # the statuses queue_stats counts per queue
WINDOWS = {"1m": timedelta(minutes=1), "5m": timedelta(minutes=5), "15m": timedelta(minutes=15)}
WAIT_SAMPLE = 5000
MAX_PAGE = 500
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")  # adminlink's ids (hex); anything else names no job
# Jobs always belong to an organization today; a row without one is recorded under this id.
SYSTEM_ORGANIZATION = "system"


# --- reading -----------------------------------------------------------------------------------


def _scoped(org_id: str | None) -> list[sa.ColumnElement[bool]]:
    """The API always passes the caller's organization; only the host's CLI may pass None."""
    return [jobs.c.organization_id == org_id] if org_id is not None else []


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((aware(end) - aware(start)).total_seconds(), 3)  # type: ignore[operator]


def ready_at(row: Any) -> datetime:
    """When the job's latest try could run: its creation, or the moment its backoff or a retry
    made it ready (``defer_until``)."""
    created = aware(row.created_at)
    deferred = aware(row.defer_until)
    assert created is not None
    return max(created, deferred) if deferred is not None else created


async def queue_stats(session: AsyncSession, org_id: str | None, at: datetime) -> list[dict[str, Any]]:
    """Per queue (job function): how many wait, run, are deferred, failed or dead; the age of the
    oldest job ready to run; jobs completed in the last 1 / 5 / 15 minutes; and the p50 / p99
    time completed first tries waited in the queue."""
    stats: dict[str, dict[str, Any]] = {}

    def entry(function: str) -> dict[str, Any]:
        return stats.setdefault(function, {
            "queue": function, "queued": 0, "in_progress": 0, "deferred": 0, "failed": 0, "dead": 0,
            "oldest_queued_age_seconds": None, "completed": dict.fromkeys(WINDOWS, 0),
            "time_in_queue_seconds": {"p50": None, "p99": None},
        })

    for function, status, deferred, count in await _status_counts(session, org_id, at):
        entry(function)["deferred" if deferred else status] += int(count)
    for function, oldest in await _oldest_ready(session, org_id, at):
        entry(function)["oldest_queued_age_seconds"] = seconds_between(oldest, at)
    for function, *counts in await _completed(session, org_id, at):
        entry(function)["completed"] = {w: int(c or 0) for w, c in zip(WINDOWS, counts, strict=True)}
    for function, waits in (await _waits(session, org_id, at)).items():
        entry(function)["time_in_queue_seconds"] = {"p50": percentile(waits, 0.5), "p99": percentile(waits, 0.99)}
    return [stats[name] for name in sorted(stats)]


async def _status_counts(session: AsyncSession, org_id: str | None, at: datetime) -> list[Any]:
    deferred = sa.and_(jobs.c.status == JobStatus.QUEUED, jobs.c.defer_until.is_not(None), jobs.c.defer_until > at)
    query = (
        sa.select(jobs.c.function, jobs.c.status, deferred.label("deferred"), sa.func.count())
        .where(*_scoped(org_id), jobs.c.status.in_(COUNTED))
        .group_by(jobs.c.function, jobs.c.status, deferred)
    )
    return list(await session.execute(query))


async def _oldest_ready(session: AsyncSession, org_id: str | None, at: datetime) -> list[Any]:
    ready = sa.func.coalesce(jobs.c.defer_until, jobs.c.created_at)
    query = (
        sa.select(jobs.c.function, sa.func.min(ready))
        .where(*_scoped(org_id), jobs.c.status == JobStatus.QUEUED, ready <= at)
        .group_by(jobs.c.function)
    )
    return [(f, aware(oldest)) for f, oldest in await session.execute(query)]


async def _completed(session: AsyncSession, org_id: str | None, at: datetime) -> list[Any]:
    windows = [sa.func.sum(sa.case((jobs.c.finished_at >= at - span, 1), else_=0)) for span in WINDOWS.values()]
    query = (
        sa.select(jobs.c.function, *windows)
        .where(*_scoped(org_id), jobs.c.status == JobStatus.COMPLETE, jobs.c.finished_at >= at - WINDOWS["15m"])
        .group_by(jobs.c.function)
    )
    return list(await session.execute(query))


async def _waits(session: AsyncSession, org_id: str | None, at: datetime) -> dict[str, list[float]]:
    """Queue waits of first tries completed in the last 15 minutes (a retry's wait is its backoff)."""
    query = (
        sa.select(jobs.c.function, jobs.c.created_at, jobs.c.defer_until, jobs.c.started_at)
        .where(*_scoped(org_id), jobs.c.status == JobStatus.COMPLETE, jobs.c.finished_at >= at - WINDOWS["15m"],
               jobs.c.tries == 1, jobs.c.started_at.is_not(None))
        .order_by(jobs.c.finished_at.desc()).limit(WAIT_SAMPLE)
    )
    waits: dict[str, list[float]] = {}
    for row in await session.execute(query):
        waited = seconds_between(ready_at(row), row.started_at)
        waits.setdefault(row.function, []).append(max(0.0, waited or 0.0))
    return waits


@dataclass(frozen=True)
class JobQuery:
    status: str | None = None
    function: str | None = None
    since: datetime | None = None
    limit: int = 50
    cursor: str | None = None


def encode_cursor(row: Any) -> str:
    raw = json.dumps([aware(row.created_at).isoformat(), row.id])  # type: ignore[union-attr]
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw)
        assert isinstance(created, str) and isinstance(job_id, str) and JOB_ID.fullmatch(job_id)
        return utc_moment(created), job_id
    except (ValueError, TypeError, OverflowError, AssertionError, binascii.Error) as exc:
        raise InvalidRequest("invalid_cursor", "cursor is not one this API handed out") from exc


def validate_query(query: JobQuery) -> None:
    if query.status is not None and query.status not in STATUSES:
        raise InvalidRequest("invalid_query", f"status must be one of: {', '.join(STATUSES)}")
    if query.function is not None and not (0 < len(query.function) <= 100 and query.function.isprintable()):
        raise InvalidRequest("invalid_query", "function must be 1 to 100 printable characters")
    if not 1 <= query.limit <= MAX_PAGE:
        raise InvalidRequest("invalid_query", f"limit must be between 1 and {MAX_PAGE}")


async def list_jobs(session: AsyncSession, org_id: str | None, query: JobQuery) -> tuple[list[Any], str | None]:
    """Newest first, paged with an opaque cursor (stable while jobs are added)."""
    validate_query(query)
    where = _scoped(org_id)
    if query.status:
        where.append(jobs.c.status == query.status)
    if query.function:
        where.append(jobs.c.function == query.function)
    if query.since:
        where.append(jobs.c.created_at >= query.since)
    if query.cursor:
        created, job_id = decode_cursor(query.cursor)
        where.append(sa.or_(jobs.c.created_at < created, sa.and_(jobs.c.created_at == created, jobs.c.id < job_id)))
    select = sa.select(jobs).where(*where).order_by(jobs.c.created_at.desc(), jobs.c.id.desc())
    rows = list(await session.execute(select.limit(query.limit + 1)))
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    return rows, encode_cursor(rows[-1]) if more else None


async def load_job(session: AsyncSession, org_id: str | None, job_id: str) -> Any:
    if not JOB_ID.fullmatch(job_id):
        raise NotFound("job_not_found", "no such job")
    row = (await session.execute(sa.select(jobs).where(*_scoped(org_id), jobs.c.id == job_id))).one_or_none()
    if row is None:
        raise NotFound("job_not_found", "no such job")
    return row


def parse_since(raw: str | None, name: str = "since") -> datetime | None:
    """The ``since`` filter of the ops API, dashboard and CLI: ISO 8601; without a zone, UTC.
    Absent is no filter; given but empty is not a date-time, and refused."""
    if raw is None:
        return None
    try:
        return utc_moment(raw.replace("Z", "+00:00"))
    except (ValueError, OverflowError) as exc:
        raise InvalidRequest("invalid_query", f"{name} must be an ISO 8601 date-time between the years 1 and "
                                              "9999 in UTC") from exc


def utc_moment(text: str) -> datetime:
    """An ISO 8601 date-time as UTC (without a zone, it is UTC): SQLite compares the stored text,
    so an offset must be converted, not kept. OverflowError when UTC leaves the years 1-9999."""
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def job_summary(row: Any) -> dict[str, Any]:
    return {
        **views.job(row),
        "defer_until": iso(row.defer_until),
        "time_in_queue_seconds": seconds_between(ready_at(row), row.started_at),
        "run_seconds": seconds_between(row.started_at, row.finished_at),
    }


def job_detail(row: Any) -> dict[str, Any]:
    """Everything about one job; secrets in its arguments, result and traceback are redacted."""
    return {
        **job_summary(row),
        "organization_id": row.organization_id,
        "idempotency_key": redact_text(row.idempotency_key),
        "args": redact(row.args),
        "result": redact(row.result),
        "error": redact_text(row.error) if row.error else None,
    }


async def arq_state(redis: Any, queue_name: str, job_id: str) -> dict[str, Any]:
    """What arq holds for the id right now (it may differ from the row, which decides)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zscore(queue_name, job_id)
        pipe.exists(in_progress_key_prefix + job_id)
        pipe.exists(result_key_prefix + job_id)
        score, running, result = await pipe.execute()
    return {"in_queue": score is not None, "running": bool(running), "result_kept": bool(result)}


# --- retry and abort ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryJob(Command):
    job_id: str


@dataclass(frozen=True)
class AbortJob(Command):
    job_id: str


@dataclass(frozen=True)
class Transition:
    """A row's change, handed to the Redis side after commit."""

    job_id: str
    function: str
    before: str
    after: str


def job_resource(row: Any) -> Resource:
    return Resource("job", row.id)


def job_record(event_type: str, row: Any, changes: tuple[Change, ...] = (), success: bool = True) -> Recorded:
    return Recorded(event_type, job_resource(row), changes, success,
                    extra={"job": {"function": row.function, "tries": row.tries}})


async def _move(uow: UnitOfWork, row: Any, **values: Any) -> None:
    """Changes the row only if nobody changed its status meanwhile."""
    moved = await uow.session.execute(
        sa.update(jobs).where(jobs.c.id == row.id, jobs.c.status == row.status).values(**values)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        raise Conflict("job_changed", "the job changed meanwhile; look at it again")


async def load_operable_job(uow: UnitOfWork, job_id: str, event_type: str) -> Any:
    """The job, once the actor may operate jobs: a role that may not is refused (and recorded)
    whether or not the job exists, so it learns nothing of which jobs do."""
    try:
        row = await load_job(uow.session, uow.actor.organization_id, job_id)
    except NotFound:
        authorize(uow, Action.OPERATE_JOBS, False, Recorded(event_type, Resource("job", job_id[:32]), success=False))
        raise
    authorize(uow, Action.OPERATE_JOBS, False, job_record(event_type, row, success=False))
    return row


async def retry(cmd: RetryJob, uow: UnitOfWork) -> Transition:
    row = await load_operable_job(uow, cmd.job_id, "job_retry")
    if row.status not in RETRYABLE:
        raise Conflict("job_not_retryable", f"only failed or dead jobs can be retried; this one is {row.status}")
    # Ready from now: its time in the queue counts from the retry, not from its creation.
    moved_to = destination(row.status, JobMove.RETRY)
    if row.status == JobStatus.DEAD:  # a fresh start: a full set of tries
        await _move(uow, row, status=moved_to, tries=0, started_at=None, finished_at=None, result=None,
                    enqueued_at=now(), defer_until=now())
        changes: tuple[Change, ...] = (Change("status", row.status, moved_to), Change("tries", row.tries, 0))
    else:  # failed: its next try, now rather than after the backoff
        await _move(uow, row, enqueued_at=now(), defer_until=now())
        changes = (Change("status", row.status, moved_to),)
    uow.collect(job_record("job_retry", row, changes))
    await uow.commit()
    return Transition(row.id, row.function, row.status, moved_to)


async def abort(cmd: AbortJob, uow: UnitOfWork) -> Transition:
    row = await load_operable_job(uow, cmd.job_id, "job_abort")
    if row.status not in ABORTABLE:
        raise Conflict("job_not_abortable", f"only queued or running jobs can be aborted; this one is {row.status}")
    who = uow.actor.email or uow.actor.name or uow.actor.id
    moved_to = destination(row.status, JobMove.ABORT)
    await _move(uow, row, status=moved_to, finished_at=now(), error=f"aborted by {who}")
    uow.collect(job_record("job_abort", row, (Change("status", row.status, moved_to),)))
    await uow.commit()
    return Transition(row.id, row.function, row.status, moved_to)


HANDLERS: dict[type[Command], Callable[[Any, UnitOfWork], Awaitable[Transition]]] = {
    RetryJob: retry, AbortJob: abort,
}


def timestamp_ms() -> int:
    return int(now().timestamp() * 1000)


async def clear_arq_leftovers(redis: Any, *job_ids: str) -> None:
    """arq refuses an id while it keeps its result, counts tries per id, and would abort the
    next run of an id that still has an abort mark: none of that may outlive a retry."""
    if not job_ids:
        return
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(*(prefix + job_id for job_id in job_ids for prefix in (result_key_prefix, retry_key_prefix)))
        pipe.zrem(abort_jobs_ss, *job_ids)
        await pipe.execute()


async def after_retry(services: Services, moved: Transition) -> bool:
    """Hands the job to arq; False if Redis could not take it now (the reconciler will)."""
    redis, queue_name = services.redis, services.settings.queue_name
    if await redis.exists(in_progress_key_prefix + moved.job_id):
        return True  # a worker still holds the id; it will claim the row again when it reruns it
    if moved.before == JobStatus.FAILED and await redis.zscore(queue_name, moved.job_id) is not None:
        await redis.zadd(queue_name, {moved.job_id: timestamp_ms()}, xx=True)
        return True
    await clear_arq_leftovers(redis, moved.job_id)
    await redis.delete(job_key_prefix + moved.job_id)
    return await services.queue.enqueue(moved.function, moved.job_id)


async def after_abort(services: Services, moved: Transition) -> str:
    """Takes a waiting job out of arq's queue, or asks the worker running it to cancel it."""
    redis, queue_name = services.redis, services.settings.queue_name
    if await redis.exists(in_progress_key_prefix + moved.job_id):
        await redis.zadd(abort_jobs_ss, {moved.job_id: timestamp_ms()})
        return "cancel_requested"
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zrem(queue_name, moved.job_id)
        pipe.delete(job_key_prefix + moved.job_id)
        await pipe.execute()
    return "removed_from_queue"


# ``reaches_workers``: whether this process's Redis is the one the workers read. The CLI's is not
# with the embedded queue (an in-process Redis of its own): the row alone then says what to do,
# and the running server's reconciler hands a retried job to its worker.


async def retry_job(services: Services, actor: Actor, job_id: str, reaches_workers: bool = True) -> dict[str, Any]:
    moved: Transition = await services.bus.handle(RetryJob(actor, job_id))
    try:
        enqueued = reaches_workers and await after_retry(services, moved)
    except Exception:  # Redis unreachable: the row is queued, the reconciler enqueues it
        enqueued = False
    return {"job_id": moved.job_id, "status": moved.after, "enqueued": enqueued}


async def abort_job(services: Services, actor: Actor, job_id: str, reaches_workers: bool = True) -> dict[str, Any]:
    moved: Transition = await services.bus.handle(AbortJob(actor, job_id))
    try:
        outcome = await after_abort(services, moved) if reaches_workers else "row_aborted"
    except Exception:  # Redis unreachable: the aborted row is never claimed, so it never runs
        outcome = "row_aborted"
    return {"job_id": moved.job_id, "status": moved.after, "was": moved.before, "arq": outcome}


def system_actor(org_id: str | None, name: str) -> Actor:
    """The host's operator at the CLI, acting in the job's organization."""
    return Actor(org_id or SYSTEM_ORGANIZATION, "cli", "system", Role.BILLING, source="cli", name=name,
                 auth_method="cli")
