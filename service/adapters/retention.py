"""What housekeeping deletes: Directory Insights events past their retention and the stored
answers of expired Idempotency-Keys. Each delete is its own short transaction."""

from __future__ import annotations

from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from service.adapters.orm import IDEMPOTENCY_KEY_LIFETIME, idempotency_keys, insights_events

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


class Retention:
    """The deletes of the retention cron jobs, on the engine's pool."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def delete_insights_events_before(self, cutoff: datetime, batch: int) -> int:
        """Deletes the events older than ``cutoff``, organization by organization, oldest first,
        ``batch`` in each transaction. Returns how many were deleted."""
        async with self.engine.connect() as conn:
            organizations = list(await conn.scalars(ORGANIZATIONS_WITH_EXPIRED_EVENTS, {"cutoff": cutoff}))
        removed = 0
        for org_id in organizations:
            removed += await self._delete_organization_events_before(org_id, cutoff, batch)
        return removed

    async def _delete_organization_events_before(self, org_id: str, cutoff: datetime, batch: int) -> int:
        events = insights_events
        removed = 0
        while True:
            oldest = (sa.select(events.c.id).where(events.c.organization_id == org_id, events.c.timestamp < cutoff)
                      .order_by(events.c.timestamp).limit(batch))
            async with self.engine.begin() as conn:
                result = await conn.execute(sa.delete(events).where(events.c.id.in_(oldest.scalar_subquery())))
            count = int(result.rowcount or 0)
            removed += count
            if count < batch:
                return removed

    async def delete_idempotency_keys_expired_at(self, at: datetime) -> int:
        """Deletes the stored answers of the Idempotency-Keys past their lifetime at ``at``."""
        table = idempotency_keys
        async with self.engine.begin() as conn:
            result = await conn.execute(sa.delete(table).where(table.c.created_at < at - IDEMPOTENCY_KEY_LIFETIME))
        return int(result.rowcount or 0)
