"""arq job functions. Each is a thin shell around a jobs-table row: claim it, do the work,
record the outcome. Work already done is never done again, so redelivery is harmless."""

from __future__ import annotations

import logging
import random
import traceback
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from arq import Retry

from service.adapters import orm
from service.bootstrap import Services
from service.domain.model import now

log = logging.getLogger(__name__)

Work = Callable[[Services, dict[str, Any]], Awaitable[Any]]


def backoff(tries: int) -> float:
    """Exponential backoff with full jitter: 1 s, 2 s, 4 s ... capped at 5 minutes."""
    return random.uniform(0, min(300.0, 2.0 ** (tries - 1)))


async def run(ctx: dict[str, Any], job_id: str, work: Work) -> Any:
    services: Services = ctx["services"]
    row = await services.jobs.claim(job_id)
    if row is None:
        return "already finished"
    try:
        result = await work(services, dict(row.args))
    except Exception as exc:
        error = "".join(traceback.format_exception_only(exc)).strip()
        if row.tries >= services.settings.job_max_tries:
            log.error("job %s (%s) is dead after %d tries: %s", job_id, row.function, row.tries, error)
            await services.jobs.finish(job_id, "dead", error=traceback.format_exc())
            return "dead"
        await services.jobs.finish(job_id, "failed", error=traceback.format_exc())
        raise Retry(defer=backoff(row.tries)) from exc
    await services.jobs.finish(job_id, "complete", result=result)
    return result


async def _end_sessions(services: Services, args: dict[str, Any]) -> dict[str, int]:
    return {"ended": await services.sessions.end_all(args["type"], args["id"])}


async def _send_email(services: Services, args: dict[str, Any]) -> dict[str, str]:
    table = orm.mail_outbox
    async with services.session_factory() as session:
        mail = (await session.execute(sa.select(table).where(table.c.id == args["mail_id"]))).one_or_none()
    if mail is None or mail.status != "pending":
        return {"status": "already handled"}
    await services.mailer.send(
        services.settings.mail_from, mail.recipient, mail.subject, mail.body, f"<{mail.id}@adminlink>"
    )
    status = "sent" if services.mailer.delivers else "kept"
    async with services.session_factory() as session, session.begin():
        await session.execute(sa.update(table).where(table.c.id == mail.id).values(status=status, sent_at=now()))
    return {"status": status}


async def end_sessions(ctx: dict[str, Any], job_id: str) -> Any:
    return await run(ctx, job_id, _end_sessions)


async def send_email(ctx: dict[str, Any], job_id: str) -> Any:
    return await run(ctx, job_id, _send_email)


async def reconcile_jobs(ctx: dict[str, Any]) -> int:
    """Cron: hands arq the committed jobs it never received (Redis was down at commit time).
    arq drops a duplicate while it still knows the id, and a finished row is never rerun."""
    services: Services = ctx["services"]
    stranded = await services.jobs.stranded(older_than=timedelta(seconds=30))
    for job in stranded:
        await services.queue.enqueue(job.function, job.id)
    if stranded:
        await services.jobs.mark_enqueued([job.id for job in stranded])
    return len(stranded)
