"""Housekeeping for workers: Directory Insights retention and expired Idempotency-Keys (cron
jobs), and the hooks around every job run that give its log lines the job's correlation id and
count it in the job metrics."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from service import metrics
from service.adapters.orm import IDEMPOTENCY_KEY_LIFETIME, idempotency_keys, insights_events
from service.bootstrap import Services
from service.domain.model import now
from service.logging import bind_job

log = logging.getLogger(__name__)

# Small batches keep each delete's transaction (and its locks) short on a busy database.
PURGE_BATCH = 5000


# The organizations holding events older than the cutoff, found with one index probe per
# organization (a loose index scan over (organization_id, timestamp)): retention needs no index of
# its own on this busy table, costs one query when nothing has expired, and deleted organizations'
# events expire too.
ORGANIZATIONS_WITH_EXPIRED_EVENTS = sa.text("""
WITH RECURSIVE orgs(id) AS (
    SELECT MIN(organization_id) FROM insights_events
    UNION ALL
    SELECT (SELECT MIN(organization_id) FROM insights_events WHERE organization_id > orgs.id)
    FROM orgs WHERE orgs.id IS NOT NULL
)
SELECT id FROM orgs
WHERE id IS NOT NULL
  AND (SELECT MIN(timestamp) FROM insights_events WHERE organization_id = orgs.id) < :cutoff
""").bindparams(sa.bindparam("cutoff", type_=sa.DateTime(timezone=True)))


async def purge_expired_insights(services: Services, batch: int = PURGE_BATCH) -> int:
    """Deletes Directory Insights events older than the retention period, oldest first."""
    cutoff = now() - timedelta(days=services.settings.insights_retention_days)
    async with services.session_factory() as session:
        organizations = list(await session.scalars(ORGANIZATIONS_WITH_EXPIRED_EVENTS, {"cutoff": cutoff}))
    removed = 0
    for org_id in organizations:
        removed += await _purge_organization(services, org_id, cutoff, batch)
    if removed:
        log.info("removed %d Directory Insights events older than %s", removed, cutoff.isoformat(),
                 extra={"removed": removed, "retention_days": services.settings.insights_retention_days})
    return removed


async def _purge_organization(services: Services, org_id: str, cutoff: datetime, batch: int) -> int:
    events = insights_events
    removed = 0
    while True:
        oldest = (sa.select(events.c.id).where(events.c.organization_id == org_id, events.c.timestamp < cutoff)
                  .order_by(events.c.timestamp).limit(batch))
        async with services.session_factory() as session, session.begin():
            result = await session.execute(sa.delete(events).where(events.c.id.in_(oldest.scalar_subquery())))
        count = int(result.rowcount or 0)  # type: ignore[attr-defined]
        removed += count
        if count < batch:
            return removed


async def purge_insights(ctx: dict[str, Any]) -> int:
    """Cron: Directory Insights retention (``ADMINLINK_INSIGHTS_RETENTION_DAYS``)."""
    return await purge_expired_insights(ctx["services"])


async def purge_expired_idempotency_keys(services: Services) -> int:
    """Deletes the stored answers of Idempotency-Keys past their lifetime: a retry then is a new
    request anyway, and an answer may carry a secret shown once (sealed, but kept no longer)."""
    table = idempotency_keys
    async with services.session_factory() as session, session.begin():
        result = await session.execute(sa.delete(table).where(table.c.created_at < now() - IDEMPOTENCY_KEY_LIFETIME))
    removed = int(result.rowcount or 0)  # type: ignore[attr-defined]
    if removed:
        log.info("removed %d expired Idempotency-Keys", removed, extra={"removed": removed})
    return removed


async def purge_idempotency_keys(ctx: dict[str, Any]) -> int:
    """Cron: Idempotency-Keys older than 24 hours."""
    return await purge_expired_idempotency_keys(ctx["services"])


async def on_job_start(ctx: dict[str, Any]) -> None:
    bind_job(str(ctx.get("job_id", "")))
    metrics.job_started(ctx)


async def count_job(ctx: dict[str, Any]) -> None:
    await metrics.job_finished(ctx)
