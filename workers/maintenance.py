"""Housekeeping for workers: Directory Insights retention and expired Idempotency-Keys (cron
jobs), and the hooks around every job run that give its log lines the job's correlation id and
count it in the job metrics."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from service import metrics
from service.bootstrap import Services
from service.domain.model import now
from service.logging import bind_job

log = logging.getLogger(__name__)

# Small batches keep each delete's transaction (and its locks) short on a busy database.
PURGE_BATCH = 5000


async def purge_expired_insights(services: Services, batch: int = PURGE_BATCH) -> int:
    """Deletes Directory Insights events older than the retention period, oldest first."""
    cutoff = now() - timedelta(days=services.settings.insights_retention_days)
    removed = await services.retention.delete_insights_events_before(cutoff, batch)
    if removed:
        log.info("removed %d Directory Insights events older than %s", removed, cutoff.isoformat(),
                 extra={"removed": removed, "retention_days": services.settings.insights_retention_days})
    return removed


async def purge_insights(ctx: dict[str, Any]) -> int:
    """Cron: Directory Insights retention (``ADMINLINK_INSIGHTS_RETENTION_DAYS``)."""
    return await purge_expired_insights(ctx["services"])


async def purge_expired_idempotency_keys(services: Services) -> int:
    """Deletes the stored answers of Idempotency-Keys past their lifetime: a retry then is a new
    request anyway, and an answer may carry a secret shown once (sealed, but kept no longer)."""
    removed = await services.retention.delete_idempotency_keys_expired_at(now())
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
