"""arq job functions. Each is a thin shell around a jobs-table row: claim it, do the work,
record the outcome. Work already done is never done again, so redelivery is harmless."""

from __future__ import annotations

import logging
import traceback
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from arq import Retry

from service import metrics
from service.adapters.arq_jobs import clear_arq_leftovers
from service.adapters.jobs import ClaimedJob, JobOutcome, backoff
from service.adapters.outbox import PendingMail
from service.bootstrap import Services
from service.domain.model import now
from service.logging import log_error

log = logging.getLogger(__name__)

Work = Callable[[Services, dict[str, Any]], Awaitable[Any]]
RowWork = Callable[[Services, ClaimedJob], Awaitable[Any]]
# A job in progress this much longer than arq lets a run last has lost its worker (and maybe
# its place in Redis): the reconciler hands it to arq again.
STUCK_MARGIN = timedelta(seconds=40)


async def run(ctx: dict[str, Any], job_id: str, work: Work) -> Any:
    return await run_row(ctx, job_id, lambda services, row: work(services, dict(row.args)))


async def run_row(ctx: dict[str, Any], job_id: str, work: RowWork) -> Any:
    """Claims the row, runs the work with it, records the outcome: ``complete``, the work's own
    ``JobOutcome``, or, on an exception, ``failed`` (retried with backoff) until ``dead``."""
    services: Services = ctx["services"]
    row = await services.jobs.claim(job_id)
    if row is None:
        return "already finished"
    try:
        result = await work(services, row)
    except Exception as exc:
        return await fail(ctx, row, exc)
    if isinstance(result, JobOutcome):
        await _finish(ctx, row, result.status, result=result.result, error=result.error)
        return result.status
    await _finish(ctx, row, "complete", result=result)
    return result


async def fail(ctx: dict[str, Any], row: ClaimedJob, exc: Exception) -> str:
    """A run that raised: ``failed`` and retried with backoff (arq's ``Retry``), or ``dead`` after
    the last try. Called from the ``except`` block that caught ``exc``."""
    if row.tries >= ctx["services"].settings.job_max_tries:
        log_error(log, exc, "job %s (%s) is dead after %d tries", row.id, row.function, row.tries)
        await _finish(ctx, row, "dead", error=traceback.format_exc())
        return "dead"
    delay = backoff(row.tries)
    await _finish(ctx, row, "failed", error=traceback.format_exc(), retry_at=now() + timedelta(seconds=delay))
    raise Retry(defer=delay) from exc


async def _finish(ctx: dict[str, Any], row: ClaimedJob, status: str, **details: Any) -> None:
    if await ctx["services"].jobs.finish(row.id, status, **details):
        metrics.job_ended_as(ctx, row.function, status)


async def _send_email(services: Services, args: dict[str, Any]) -> dict[str, str]:
    """Sends a pending outbox message once. The row is locked while it is sent (two runs of one
    job cannot both send it) and marked on the connection already held as soon as the SMTP server
    has taken it: a worker killed in that instant is the only way a rerun sends it again, with
    the same Message-ID."""

    async def send(mail: PendingMail) -> str:
        await services.mailer.send(
            services.settings.mail_from, mail.recipient, mail.subject, mail.body, f"<{mail.id}@adminlink>"
        )
        return "sent" if services.mailer.delivers else "kept"

    status = await services.outbox.send_pending(args["mail_id"], send)
    return {"status": status or "already handled"}


async def send_email(ctx: dict[str, Any], job_id: str) -> Any:
    return await run(ctx, job_id, _send_email)


async def reconcile_jobs(ctx: dict[str, Any]) -> int:
    """Cron: hands arq the committed jobs it never received (Redis was down at commit time) or
    lost (Redis restarted empty, a worker died). arq drops a duplicate while it still knows the
    id, and a finished row is never rerun."""
    services: Services = ctx["services"]
    stuck_after = timedelta(seconds=services.settings.job_timeout + 10) + STUCK_MARGIN
    stranded = await services.jobs.stranded(older_than=timedelta(seconds=30), stuck_after=stuck_after)
    # A job retried where this Redis could not be reached (the CLI beside an embedded queue) still
    # has its last run's result here, and arq would refuse its id while it is kept.
    await clear_arq_leftovers(services.redis, *[job.id for job in stranded])
    await services.queue.enqueue_rows([(job.function, job.id) for job in stranded])
    if stranded:
        await services.jobs.mark_enqueued([job.id for job in stranded])
    return len(stranded)
