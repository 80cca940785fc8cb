"""The job that applies a webhook delivery: a thin shell around ``service.inbound.apply``."""

from __future__ import annotations

from typing import Any

from service import inbound
from workers.jobs import run_row


async def apply_webhook(ctx: dict[str, Any], job_id: str) -> Any:
    return await run_row(ctx, job_id, inbound.apply)
