"""The handlers of ops' commands: a retry or abort changes the job's row and is recorded, in one
transaction; Redis is brought in line after commit (``service.ops.actions``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from service.domain.commands import Command
from service.domain.errors import Conflict, NotFound
from service.domain.events import Change, Recorded, Resource
from service.domain.jobs import ABORTABLE, RETRYABLE, JobMove, JobStatus, destination
from service.domain.model import now
from service.handlers import authorize
from service.ops.commands import AbortJob, RetryJob
from service.ops.views import load_job
from service.policy import Action
from service.unit_of_work import UnitOfWork


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
    if not await uow.jobs.move(row.id, row.status, **values):
        raise Conflict("job_changed", "the job changed meanwhile; look at it again")


async def load_operable_job(uow: UnitOfWork, job_id: str, event_type: str) -> Any:
    """The job, once the actor may operate jobs: a role that may not is refused (and recorded)
    whether or not the job exists, so it learns nothing of which jobs do."""
    try:
        row = await load_job(uow.jobs, uow.actor.organization_id, job_id)
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
