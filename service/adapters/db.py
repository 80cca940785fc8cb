"""Database engine and migrations (Alembic), for SQLite (embedded) and PostgreSQL; the readiness
check, and which database errors mean the database cannot be reached."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy import event, make_url
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

MIGRATIONS = Path(__file__).parent / "migrations"


def make_engine(url: str) -> AsyncEngine:
    if url.startswith("sqlite"):
        engine = create_async_engine(url, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    # No ping before each use (a round trip per transaction): a connection found dead makes its
    # request fail (503, or a job retried) and SQLAlchemy replaces the pool's older connections.
    return create_async_engine(url, pool_size=10, max_overflow=10)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")  # cascades and RESTRICT, as on PostgreSQL
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not wait for the writer
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def single_statements(engine: AsyncEngine) -> AsyncEngine:
    """The same pool for work that is one statement, atomic on its own: no BEGIN and COMMIT around
    it, so one round trip instead of three."""
    return engine.execution_options(isolation_level="AUTOCOMMIT")


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)


async def check_connection(engine: AsyncEngine) -> None:
    """Raises unless the database answers a statement on one of the pool's connections."""
    async with engine.connect() as conn:
        await conn.execute(sa.text("SELECT 1"))


def is_database_error(error: BaseException) -> bool:
    """The database (or its driver, wrapped by SQLAlchemy) failed a statement or a connection."""
    return isinstance(error, sa.exc.DBAPIError)


def is_database_outage(error: BaseException) -> bool:
    """The database cannot be reached: no pooled connection came in time, or a connection was
    refused or died (PostgreSQL restarted: SQLAlchemy then replaces the pool's connections, so the
    next try gets a fresh one). Nothing was done, and the caller may try again."""
    if isinstance(error, sa.exc.TimeoutError):
        return True
    return isinstance(error, sa.exc.DBAPIError) and _lost_connection(error)


def _lost_connection(error: sa.exc.DBAPIError) -> bool:
    return error.connection_invalidated or isinstance(error, (sa.exc.OperationalError, sa.exc.InterfaceError))


def _alembic_config(connection: Any) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


async def upgrade(engine: AsyncEngine, revision: str = "heads") -> None:
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: command.upgrade(_alembic_config(sync), revision))


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: command.downgrade(_alembic_config(sync), revision))


def latest_revisions() -> set[str]:
    """The schema revisions this code expects: the heads of its migrations."""
    from alembic.script import ScriptDirectory

    return set(ScriptDirectory.from_config(_alembic_config(None)).get_heads())


async def applied_revisions(engine: AsyncEngine) -> set[str]:
    """The revisions the database's schema is at; none when no migration was ever applied."""
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as conn:
        return await conn.run_sync(lambda sync: set(MigrationContext.configure(sync).get_current_heads()))


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite database URL (None for another database or an in-memory one)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database).resolve()


def describe(url: str) -> str:
    """The database as an operator recognises it: the SQLite file, or the URL without its password."""
    path = sqlite_file(url)
    return f"SQLite file {path}" if path is not None else make_url(url).render_as_string(hide_password=True)


async def current_revision(conn: AsyncConnection) -> str | None:
    from alembic.runtime.migration import MigrationContext

    return await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
