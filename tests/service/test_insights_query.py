"""The Directory Insights queries the issue names use indexes, on SQLite and on PostgreSQL: a time
range plus event_type, and the seed's admin-login filter. The database's own planner says so."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from service import insights_query
from service.adapters import db, insights_store
from service.bootstrap import Services
from service.domain.model import new_id, now

SEED_FILTER = {"and": [{"initiated_by.administrator": True}, {"target_resource.type": "admin_portal"}]}


async def plan(conn: AsyncConnection, statement: sa.Select[object]) -> str:
    sql = str(statement.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True}))
    if conn.dialect.name == "postgresql":
        # On a small table a sequential scan is cheapest; forbid it to learn whether an index
        # can answer at all (without one, PostgreSQL still falls back to a sequential scan).
        await conn.execute(sa.text("SET LOCAL enable_seqscan = off"))
        rows = await conn.execute(sa.text("EXPLAIN " + sql))
    else:
        rows = await conn.execute(sa.text("EXPLAIN QUERY PLAN " + sql))
    return "\n".join(str(r[-1]) for r in rows)


TYPES = ["user_update", "user_login_attempt", "admin_login_attempt", "admin_update", "user_create",
         "user_delete", "user_suspended", "admin_create", "job_retry", "user_unlocked"]


@pytest.fixture(scope="module")
def org_with_history(database_url: str) -> str:
    """An organization with 90 days of varied events, and planner statistics, so that the plans
    below are the ones a real directory gets (an empty, unanalysed table plans differently)."""
    org_id = new_id()

    async def seed() -> None:
        engine = db.make_engine(database_url)
        start = now() - timedelta(days=90)
        rows = []
        for i in range(3000):
            event_type = TYPES[i % len(TYPES)]
            portal = event_type.endswith("login_attempt") and i % 3 == 0
            rows.append({"id": new_id(), "organization_id": org_id if i % 4 else new_id(), "event_type": event_type,
                         "service": "directory", "timestamp": start + timedelta(minutes=43 * i), "success": True,
                         "initiated_by_administrator": portal, "target_resource_type": "admin_portal" if portal
                         else None, "body": {"event_type": event_type}})
        async with engine.begin() as conn:
            await conn.execute(insights_store.events.insert(), rows)
            await conn.execute(sa.text("ANALYZE"))
        await engine.dispose()

    asyncio.run(seed())
    return org_id


def page_query(org_id: str, search_term: dict[str, object], search_after: bool = False,
               sort: str = "ASC") -> sa.Select[object]:
    body: dict[str, object] = {"service": ["all"], "start_time": (now() - timedelta(days=7)).isoformat(),
                               "end_time": now().isoformat(), "search_term": search_term, "limit": 100,
                               "sort": sort}
    if search_after:
        body["search_after"] = [insights_query.to_epoch_ms(now() - timedelta(days=1)), new_id()]
    return insights_store.select_page(insights_query.parse(org_id, body, now()))


def assert_uses(explained: str, index: str) -> None:
    assert index in explained, explained
    assert "Seq Scan on insights_events" not in explained, explained
    assert "SCAN insights_events" not in explained, explained  # SQLite's word for a full scan


async def test_time_range_and_event_type_use_their_index(services: Services, org_with_history: str) -> None:
    for search_after in (False, True):
        for sort in ("ASC", "DESC"):
            statement = page_query(org_with_history, {"and": [{"event_type": "admin_login_attempt"}]},
                                   search_after, sort)
            async with services.engine.begin() as conn:
                assert_uses(await plan(conn, statement), "ix_insights_org_type_time")


async def test_the_seeds_filter_uses_its_index(services: Services, org_with_history: str) -> None:
    for search_after in (False, True):
        async with services.engine.begin() as conn:
            statement = page_query(org_with_history, SEED_FILTER, search_after)
            assert_uses(await plan(conn, statement), "ix_insights_org_target_admin_time")


async def test_count_of_the_seeds_filter_uses_its_index(services: Services, org_with_history: str) -> None:
    body = {"service": ["all"], "start_time": (now() - timedelta(days=7)).isoformat(), "search_term": SEED_FILTER}
    query = insights_query.parse(org_with_history, body, now())
    statement = sa.select(sa.func.count()).select_from(insights_store.events).where(*insights_store.where(query))
    async with services.engine.begin() as conn:
        assert_uses(await plan(conn, statement), "ix_insights_org_target_admin_time")
