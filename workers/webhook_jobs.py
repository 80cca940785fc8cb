"""The jobs that apply webhook deliveries: thin shells around ``service.inbound``.

- ``drain_webhooks``: one per integration, with a fixed id (``inbound.drain_job``): the receiver
  wakes it after recording deliveries; it applies the integration's waiting rows in batches until
  none is left (or its time is up, and it asks to run again). A wake-up that comes while it runs
  makes it run again once it ends (``wake_again``, after arq has let go of its id).
- ``apply_webhook``: one row by its id, in a batch of its own: a failed row's retry, an operator's
  retry, a row the reconciler hands to arq again.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from arq import Retry, func

from service import inbound, metrics
from service.bootstrap import Services
from service.domain.model import aware, now
from workers.jobs import fail

# A drain gives its place back after this share of the job timeout: arq cancels a longer run.
DRAIN_SHARE_OF_TIMEOUT = 0.5
LINGER_STEP = 0.005  # seconds between two looks for a wake-up while a drain lingers


async def _drain_webhooks(ctx: dict[str, Any], organization_id: str, integration_id: str) -> int:
    services: Services = ctx["services"]
    metrics.counted_by_batch(ctx)
    ends_at = time.monotonic() + services.settings.job_timeout * DRAIN_SHARE_OF_TIMEOUT
    # First what a dead worker left claimed (its claim lapsed), then what waits.
    applied = 0
    while taken := await inbound.drain(services, organization_id, integration_id, lapsed=True):
        applied += taken
    while True:
        taken = await inbound.drain(services, organization_id, integration_id)
        applied += taken
        if time.monotonic() > ends_at:
            await services.queue.wake(inbound.DRAIN_FUNCTION, [(ctx["job_id"], (organization_id, integration_id))])
            return applied
        if not taken and not await woken_within(services, ctx["job_id"], services.settings.job_poll_delay):
            return applied


async def woken_within(services: Services, job_id: str, seconds: float) -> bool:
    """Whether the receiver woke the drain in the next ``seconds``. A drain that found nothing
    waits this long before it ends: events arriving steadily are then applied at once, instead of
    after arq's next poll of a new drain job (up to a poll delay later)."""
    ends_at = time.monotonic() + seconds
    while time.monotonic() < ends_at:
        if await services.queue.take_again(job_id):
            return True
        await asyncio.sleep(LINGER_STEP)
    return False


# No result kept: a kept result would make arq refuse the next wake-up of the same id.
drain_webhooks = func(_drain_webhooks, name=inbound.DRAIN_FUNCTION, keep_result=0)


async def wake_again(ctx: dict[str, Any]) -> None:
    """After a drain job ended and arq let go of its id: a wake-up that came meanwhile runs it again."""
    job_id = str(ctx.get("job_id", ""))
    if not job_id.startswith(inbound.DRAIN_PREFIX):
        return
    queue = ctx["services"].queue
    if await queue.take_again(job_id):
        organization_id, integration_id = job_id.removeprefix(inbound.DRAIN_PREFIX).split(":", 1)
        await queue.wake(inbound.DRAIN_FUNCTION, [(job_id, (organization_id, integration_id))])


async def apply_webhook(ctx: dict[str, Any], job_id: str) -> Any:
    services: Services = ctx["services"]
    job = await services.jobs.claim(job_id)
    if job is None:
        return "already finished"
    try:
        ended = await inbound.apply_claimed(services, [job])
    except Exception as exc:
        return await fail(ctx, job, exc)
    metrics.counted_by_batch(ctx)
    status = ended.get(job.id, "claimed by another run")
    if status == "failed":
        # Its next try is this arq job again: arq holds its id while it runs, so the batch could
        # not enqueue it; the row says when.
        row = await services.jobs.get(job.id)
        retry_at = aware(row.defer_until) if row is not None else None
        raise Retry(defer=max(0.0, (retry_at - now()).total_seconds()) if retry_at else 1.0)
    return status
