"""Directory Insights queries (``service.insights_query.EventQuery``) as SQL over ``insights_events``.

Every statement is scoped to the query's organization and time range. The fields with a column
of their own use the indexes; the others read the JSON body through ``JsonText``, which each
database compiles its own way. Paging is by keyset on (timestamp, id).
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement

from service.adapters.orm import insights_events as events
from service.domain.model import as_utc
from service.insights_query import (
    PATH_SEGMENT,
    BodyPath,
    Column,
    Condition,
    EventQuery,
    Field,
    Match,
    Page,
    Scalar,
    project,
    to_epoch_ms,
)

MAX_DISTINCT = 1000

# The column of each field that has one (``insights_query.COLUMN_FIELDS`` reads their values).
COLUMNS: dict[str, sa.Column[Any]] = {
    "event_type": events.c.event_type, "service": events.c.service, "id": events.c.id, "success": events.c.success,
    "initiated_by.administrator": events.c.initiated_by_administrator,
    "target_resource.type": events.c.target_resource_type,
}


class InsightsStore:
    """Runs Directory Insights queries, each in a session of its own."""

    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self.session_factory = session_factory

    async def page(self, query: EventQuery) -> Page:
        async with self.session_factory() as session:
            return await fetch_page(session, query)

    async def count(self, query: EventQuery) -> int:
        async with self.session_factory() as session:
            return await count(session, query)

    async def distinct(self, query: EventQuery, field: Field) -> dict[str, Any]:
        async with self.session_factory() as session:
            return await distinct(session, query, field)


# --- JSON paths in SQL -------------------------------------------------------------------------


class JsonText(ColumnElement[str]):
    """The text of a scalar at a path in the event body (``true`` / ``false`` for booleans, the
    digits of a number, the string itself), or NULL when the path is absent or null."""

    type = sa.String()
    inherit_cache = False

    def __init__(self, column: sa.Column[Any], path: tuple[str, ...]) -> None:
        assert all(PATH_SEGMENT.match(p) for p in path)
        self.column = column
        self.path = path


# The path is written into the SQL, not bound: PostgreSQL must see the same expression in SELECT
# and GROUP BY. That is safe because ``parse_path`` admits only letters, digits, "_", "@" and "-".
@compiles(JsonText, "postgresql")
def _json_text_postgresql(element: JsonText, compiler: Any, **kw: Any) -> str:
    path = "'{" + ",".join(element.path) + "}'"
    return f"({compiler.process(element.column, **kw)} #>> {path})"


@compiles(JsonText)
def _json_text_sqlite(element: JsonText, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    path = "'$." + ".".join(f'"{p}"' for p in element.path) + "'"
    # json_extract hands booleans back as 1 / 0; name them the way PostgreSQL's #>> does.
    return (f"(CASE json_type({column}, {path}) WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
            f"WHEN 'object' THEN NULL WHEN 'array' THEN NULL "
            f"ELSE CAST(json_extract({column}, {path}) AS TEXT) END)")


def json_text(path: tuple[str, ...]) -> JsonText:
    return JsonText(events.c.body, path)


# --- terms -------------------------------------------------------------------------------------


def text_of(value: Scalar) -> str:
    """A value the way ``JsonText`` shows it; strings compare without regard to case."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value.lower()
    return json.dumps(value)


def column_term(column: sa.Column[Any], values: list[Any]) -> ColumnElement[bool]:
    """``values`` of a column; None among them matches events lacking the field."""
    present = list(dict.fromkeys(v for v in values if v is not None))
    clauses: list[ColumnElement[bool]] = []
    if present:
        match = column == present[0] if len(present) == 1 else column.in_(present)
        # IS NOT NULL keeps the term two-valued, so that "not" also matches events lacking the field.
        clauses.append(sa.and_(column.is_not(None), match) if column.nullable else match)
    if len(present) < len(values):
        clauses.append(column.is_(None))
    return sa.or_(*clauses)


def body_term(path: tuple[str, ...], values: list[Scalar]) -> ColumnElement[bool]:
    text = json_text(path)
    wanted = sorted({text_of(v) for v in values if v is not None})
    clauses: list[ColumnElement[bool]] = []
    if wanted:
        lowered = sa.func.lower(text)
        clauses.append(sa.and_(text.is_not(None), lowered == wanted[0] if len(wanted) == 1 else lowered.in_(wanted)))
    if any(v is None for v in values):
        clauses.append(text.is_(None))
    return sa.or_(*clauses)


def match_clause(match: Match) -> ColumnElement[bool]:
    if isinstance(match.field, Column):
        return column_term(COLUMNS[match.field.name], list(match.values))
    return body_term(match.field.path, list(match.values))


def condition_clause(condition: Condition) -> ColumnElement[bool]:
    if isinstance(condition, Match):
        return match_clause(condition)
    clauses = [condition_clause(term) for term in condition.terms]
    if condition.op == "and":
        return sa.and_(*clauses)
    if condition.op == "or":
        return sa.or_(*clauses)
    return sa.not_(sa.or_(*clauses))


# --- the query ---------------------------------------------------------------------------------


def where(query: EventQuery) -> list[ColumnElement[bool]]:
    clauses: list[ColumnElement[bool]] = [
        events.c.organization_id == query.organization_id,
        events.c.timestamp >= query.start_time,
    ]
    if query.end_time is not None:
        clauses.append(events.c.timestamp <= query.end_time)
    if "all" not in query.services:
        clauses.append(column_term(events.c.service, list(query.services)))
    if query.condition is not None:
        clauses.append(condition_clause(query.condition))
    return clauses


def after(query: EventQuery) -> list[ColumnElement[bool]]:
    """Keyset paging. The plain bound on the timestamp lets the index skip what came before."""
    if query.search_after is None:
        return []
    moment, event_id = query.search_after
    ts, ident = events.c.timestamp, events.c.id
    if query.sort == "ASC":
        return [ts >= moment, sa.or_(ts > moment, ident > event_id)]
    return [ts <= moment, sa.or_(ts < moment, ident < event_id)]


def select_page(query: EventQuery) -> sa.Select[Any]:
    ts, ident = events.c.timestamp, events.c.id
    order = (ts.asc(), ident.asc()) if query.sort == "ASC" else (ts.desc(), ident.desc())
    # The stored body is sent as it is: no decoding and re-encoding of a thousand events.
    return (
        sa.select(ts, ident, sa.cast(events.c.body, sa.Text).label("body"))
        .where(*where(query), *after(query))
        .order_by(*order)
        .limit(query.limit)
    )


async def fetch_page(session: AsyncSession, query: EventQuery) -> Page:
    rows = list(await session.execute(select_page(query)))
    bodies = [r.body for r in rows]
    if query.fields is not None:
        bodies = [json.dumps(project(json.loads(b), query.fields), separators=(",", ":")) for b in bodies]
    # Written out by hand: a float would not keep the microseconds of the keyset exact.
    if not rows:
        return Page(bodies, None, None)
    moment, event_id = as_utc(rows[-1].timestamp), str(rows[-1].id)
    return Page(bodies, f"[{to_epoch_ms(moment)}, {json.dumps(event_id)}]", (moment, event_id))


async def count(session: AsyncSession, query: EventQuery) -> int:
    total = await session.scalar(sa.select(sa.func.count()).select_from(events).where(*where(query)))
    return int(total or 0)


def field_expression(field: Field) -> ColumnElement[Any]:
    if isinstance(field, BodyPath):
        return json_text(field.path)
    return COLUMNS[field.name]


async def distinct(session: AsyncSession, query: EventQuery, field: Field) -> dict[str, Any]:
    """Each value of the field among matching events, with how many events have it, most first,
    in JumpCloud's (Elasticsearch's) shape: beyond MAX_DISTINCT values, ``sum_other_doc_count``
    says how many matching events the buckets leave out. Counts are exact."""
    value = field_expression(field)
    matching = (*where(query), value.is_not(None))
    hits = sa.func.count().label("hits")
    rows = list(await session.execute(
        sa.select(value.label("key"), hits).where(*matching).group_by(value).order_by(hits.desc(), value)
        .limit(MAX_DISTINCT)
    ))
    buckets = [{"key": r.key, "doc_count": int(r.hits)} for r in rows]
    others = 0
    if len(rows) == MAX_DISTINCT:  # maybe cut short: count what the buckets leave out
        total = await session.scalar(sa.select(sa.func.count()).select_from(events).where(*matching))
        others = int(total or 0) - sum(b["doc_count"] for b in buckets)
    return {"buckets": buckets, "doc_count_error_upper_bound": 0, "sum_other_doc_count": others}
