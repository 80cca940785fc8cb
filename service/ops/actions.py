"""Retry and abort as the API, dashboard and CLI ask for them: the command through the message
bus, then arq brought in line with the committed row."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from service.adapters.arq_jobs import after_abort, after_retry
from service.domain.commands import Actor
from service.domain.model import Role
from service.ops.commands import AbortJob, RetryJob
from service.ops.handlers import Transition

if TYPE_CHECKING:
    from service.bootstrap import Services

# Jobs always belong to an organization today; a row without one is recorded under this id.
SYSTEM_ORGANIZATION = "system"


# ``reaches_workers``: whether this process's Redis is the one the workers read. The CLI's is not
# with the embedded queue (an in-process Redis of its own): the row alone then says what to do,
# and the running server's reconciler hands a retried job to its worker.


async def retry_job(services: Services, actor: Actor, job_id: str, reaches_workers: bool = True) -> dict[str, Any]:
    moved: Transition = await services.bus.handle(RetryJob(actor, job_id))
    try:
        enqueued = reaches_workers and await after_retry(services.queue, moved.job_id, moved.function, moved.before)
    except Exception:  # Redis unreachable: the row is queued, the reconciler enqueues it
        enqueued = False
    return {"job_id": moved.job_id, "status": moved.after, "enqueued": enqueued}


async def abort_job(services: Services, actor: Actor, job_id: str, reaches_workers: bool = True) -> dict[str, Any]:
    moved: Transition = await services.bus.handle(AbortJob(actor, job_id))
    try:
        outcome = await after_abort(services.queue, moved.job_id) if reaches_workers else "row_aborted"
    except Exception:  # Redis unreachable: the aborted row is never claimed, so it never runs
        outcome = "row_aborted"
    return {"job_id": moved.job_id, "status": moved.after, "was": moved.before, "arq": outcome}


def system_actor(org_id: str | None, name: str) -> Actor:
    """The host's operator at the CLI, acting in the job's organization."""
    return Actor(org_id or SYSTEM_ORGANIZATION, "cli", "system", Role.BILLING, source="cli", name=name,
                 auth_method="cli")
