"""What the webhook receiver reads and writes: integrations, the users deliveries name, the
employee-id links they teach, and their job rows (``service.intake`` records deliveries in
batches through ``DeliveryStore``).

On PostgreSQL a batch goes first on asyncpg itself (``adapters.direct``), each statement
committing on its own: that holds while every subject is an email the batch's one lookup found
(no link to learn). Anything else, and every batch on SQLite, is one SQLAlchemy Core transaction
with the links it teaches. The service layer never knows which.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, Protocol, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from service.adapters import direct, orm
from service.adapters.direct import Direct
from service.domain.model import now

KnownEmails = dict[tuple[str, str], str]  # (organization id, lower-case email) -> user id
DATABASE_DOWN: tuple[type[Exception], ...] = (SQLAlchemyError, *direct.ERRORS)
T = TypeVar("T")


class Collision(Exception):
    """A concurrent batch wrote the same row first (an employee-id link): nothing was written."""


class NeedsTransaction(Exception):
    """A subject that only a lookup of its own can resolve, or a link to learn: the batch is
    written in a SQLAlchemy transaction instead."""


class DeliveryWrites(Protocol):
    """The statements of one batch of deliveries."""

    async def users_by_email(self, wanted: set[tuple[str, str]]) -> KnownEmails:
        """Users of the wanted (organization, lower-case email) pairs, in one lookup."""

    async def user_of_employee(self, org_id: str, integration_id: str, employee_id: str) -> str | None: ...

    async def users_of_external_id(self, org_id: str, external_id: str) -> list[str]:
        """At most two: one more than a subject may match."""

    async def user_of_email(self, org_id: str, email: str) -> str | None: ...

    async def learn_links(self, org_id: str, integration_id: str, links: list[tuple[str, str]]) -> None:
        """(employee id, user id) pairs the integration taught."""

    async def insert(self, rows: list[dict[str, Any]]) -> set[str]:
        """Job rows; answers the idempotency keys inserted (a key recorded before is skipped)."""

    async def recorded(self, keys: list[str]) -> list[tuple[str, str, str]]:
        """(idempotency key, job id, status) of the rows of these keys."""


class CoreWrites:
    """The batch's statements through SQLAlchemy, in the caller's transaction (any database)."""

    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def users_by_email(self, wanted: set[tuple[str, str]]) -> KnownEmails:
        """A subject not found here is looked up on its own (``user_of_email``), so a
        case-folding difference never turns into a 422."""
        if not wanted:
            return {}
        found = await self.conn.execute(USERS_BY_EMAIL, {"orgs": list({org for org, _ in wanted}),
                                                         "emails": list({e for _, e in wanted})})
        return {(row.organization_id, row.email): row.id for row in found}

    async def user_of_employee(self, org_id: str, integration_id: str, employee_id: str) -> str | None:
        links = orm.employee_links
        found = await self.conn.scalar(sa.select(links.c.user_id).where(
            links.c.organization_id == org_id, links.c.integration_id == integration_id,
            links.c.employee_id == employee_id))
        return None if found is None else str(found)

    async def users_of_external_id(self, org_id: str, external_id: str) -> list[str]:
        users = orm.users
        found = await self.conn.execute(sa.select(users.c.id).where(
            users.c.organization_id == org_id, users.c.external_id == external_id).limit(2))
        return [str(row.id) for row in found]

    async def user_of_email(self, org_id: str, email: str) -> str | None:
        users = orm.users
        found = await self.conn.scalar(sa.select(users.c.id).where(
            users.c.organization_id == org_id, sa.func.lower(users.c.email) == email))
        return None if found is None else str(found)

    async def learn_links(self, org_id: str, integration_id: str, links: list[tuple[str, str]]) -> None:
        for employee_id, user_id in links:
            await self.conn.execute(orm.employee_links.insert().values(
                organization_id=org_id, integration_id=integration_id, employee_id=employee_id, user_id=user_id,
                created_at=now()))

    async def insert(self, rows: list[dict[str, Any]]) -> set[str]:
        # Rows as parameters, not in the statement: its compiled form is cached, and SQLAlchemy
        # still sends them as one multi-row INSERT.
        insert = INSERT_IGNORING_DUPLICATES[self.conn.dialect.name]
        return set(await self.conn.scalars(insert, rows))

    async def recorded(self, keys: list[str]) -> list[tuple[str, str, str]]:
        found = await self.conn.execute(RECORDED_JOBS, {"keys": keys})
        return [(row.idempotency_key, row.id, row.status) for row in found]


class DirectWrites:
    """The same statements on asyncpg (PostgreSQL), each committing on its own: no lookup of a
    subject of its own, no link (``NeedsTransaction``)."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def users_by_email(self, wanted: set[tuple[str, str]]) -> KnownEmails:
        if not wanted:
            return {}
        found = await self.conn.fetch(DIRECT_USERS_BY_EMAIL, list({org for org, _ in wanted}),
                                      list({e for _, e in wanted}))
        return {(org, email): user_id for org, email, user_id in found}

    async def user_of_employee(self, org_id: str, integration_id: str, employee_id: str) -> str | None:
        raise NeedsTransaction

    async def users_of_external_id(self, org_id: str, external_id: str) -> list[str]:
        raise NeedsTransaction

    async def user_of_email(self, org_id: str, email: str) -> str | None:
        raise NeedsTransaction

    async def learn_links(self, org_id: str, integration_id: str, links: list[tuple[str, str]]) -> None:
        if links:
            raise NeedsTransaction

    async def insert(self, rows: list[dict[str, Any]]) -> set[str]:
        found = await self.conn.fetch(
            DIRECT_INSERT_IGNORING_DUPLICATES, [r["id"] for r in rows], [r["organization_id"] for r in rows],
            [r["idempotency_key"] for r in rows], [json.dumps(r["args"], separators=(",", ":")) for r in rows],
            [r["function"] for r in rows], rows[0]["created_at"])
        return {key for (key,) in found}

    async def recorded(self, keys: list[str]) -> list[tuple[str, str, str]]:
        return [tuple(row) for row in await self.conn.fetch(DIRECT_RECORDED_JOBS, keys)]


class DeliveryStore:
    """Runs a batch's work on the writes that fit it (chosen once, in bootstrap, by the driver)."""

    def __init__(self, engine: AsyncEngine, single_statements: AsyncEngine, pool: Direct | None) -> None:
        self.engine = engine
        self.single_statements = single_statements
        self.pool = pool

    async def write(self, work: Callable[[DeliveryWrites], Awaitable[T]]) -> T:
        """``work`` on asyncpg where it can be (PostgreSQL, no ``NeedsTransaction``), else in one
        SQLAlchemy transaction."""
        if self.pool is not None:
            try:
                async with self.pool.acquire() as conn:
                    return await work(DirectWrites(conn))
            except NeedsTransaction:
                pass
        # A Core connection, not an ORM session: nothing here is an object, and a session's
        # bookkeeping costs more than these statements.
        try:
            async with self.engine.begin() as conn:
                return await work(CoreWrites(conn))
        except IntegrityError as exc:
            raise Collision from exc

    async def integration(self, integration_id: str) -> Any:
        """The integration's row, or None (one statement, without a transaction around it)."""
        table = orm.integrations
        async with self.single_statements.connect() as conn:
            return (await conn.execute(sa.select(table).where(table.c.id == integration_id))).one_or_none()


class IntegrationCache:
    """Integrations as receivers last read them, for a few seconds, so a delivery costs one
    database transaction, not two. One per process (built in bootstrap). A signature that fails
    against a cached entry is checked again against a fresh read (a rotation counts at once); the
    previous secret's grace is checked at each use. A deleted integration may take deliveries for
    ``seconds`` more: their jobs end ``dead`` (integration_not_found), as the batch reads the
    integration afresh.

    An entry holds the integration twice, built once: with the secrets it accepts during the
    previous secret's grace, and with the current secret alone, for after it."""

    def __init__(self, seconds: float = 5.0, size: int = 10_000) -> None:
        self.seconds, self.size = seconds, size
        self.entries: dict[str, tuple[float, Any, Any, datetime | None]] = {}

    def get(self, integration_id: str) -> tuple[Any, Any, datetime | None] | None:
        entry = self.entries.get(integration_id)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1:]

    def put(self, integration_id: str, in_grace: Any, after_grace: Any, grace: datetime | None) -> None:
        if len(self.entries) >= self.size:
            self.entries.clear()
        self.entries[integration_id] = (time.monotonic() + self.seconds, in_grace, after_grace, grace)

    def drop(self, integration_id: str) -> None:
        self.entries.pop(integration_id, None)


# Statements built once: building one costs more Python than running it.
# A key recorded before (a sender's retry, a concurrent delivery) is skipped, not an error.
INSERT_IGNORING_DUPLICATES = {
    "postgresql": postgresql.insert(orm.jobs).on_conflict_do_nothing().returning(orm.jobs.c.idempotency_key),
    "sqlite": sqlite.insert(orm.jobs).on_conflict_do_nothing().returning(orm.jobs.c.idempotency_key)}
_LOWER_EMAIL = sa.func.lower(orm.users.c.email)
USERS_BY_EMAIL = sa.select(orm.users.c.organization_id, _LOWER_EMAIL.label("email"), orm.users.c.id).where(
    orm.users.c.organization_id.in_(sa.bindparam("orgs", expanding=True)),
    _LOWER_EMAIL.in_(sa.bindparam("emails", expanding=True)))
RECORDED_JOBS = sa.select(orm.jobs.c.idempotency_key, orm.jobs.c.id, orm.jobs.c.status).where(
    orm.jobs.c.idempotency_key.in_(sa.bindparam("keys", expanding=True)))

# The same three for asyncpg. Arrays, not one parameter per row, so each statement is prepared
# once per connection whatever the batch's size.
DIRECT_USERS_BY_EMAIL = """
SELECT organization_id, lower(email), id FROM users
WHERE organization_id = ANY($1::varchar[]) AND lower(email) = ANY($2::text[])"""
DIRECT_INSERT_IGNORING_DUPLICATES = """
INSERT INTO jobs (id, organization_id, idempotency_key, args, function, status, created_at)
SELECT id, organization_id, idempotency_key, args, function, 'queued', $6
FROM unnest($1::varchar[], $2::varchar[], $3::varchar[], $4::json[], $5::varchar[])
    AS t(id, organization_id, idempotency_key, args, function)
ON CONFLICT (idempotency_key) DO NOTHING
RETURNING idempotency_key"""
DIRECT_RECORDED_JOBS = "SELECT idempotency_key, id, status FROM jobs WHERE idempotency_key = ANY($1::varchar[])"
