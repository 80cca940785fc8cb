"""A few hot PostgreSQL statements sent on asyncpg itself, not through SQLAlchemy.

SQLAlchemy costs some 0.5 ms of CPU for each statement it runs on asyncpg, several times what
the driver costs for the same statement. Where a path is a handful of fixed statements run for
every webhook (the receiver's batch write; a job's claim, finish and integration read), that is
most of its work, so those statements are written in SQL once and sent on a small asyncpg pool
of their own.
Everything else, and every statement on SQLite (the embedded default), stays on SQLAlchemy; the
test suite runs on both, so both paths are exercised.

The pool connects lazily, like SQLAlchemy's: a service starts while PostgreSQL is down and
answers 503 until it is back."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from sqlalchemy.engine import make_url

POOL_SIZE = 8  # each use is one or two round trips: a web process's batch writers, a worker's claims and finishes
# A connection the server dropped may fail as an interface error, an OS error or, caught in the
# middle of its protocol, asyncpg's InternalClientError ("cannot switch to state ...").
BROKEN: tuple[type[Exception], ...] = (asyncpg.InterfaceError, asyncpg.InternalClientError, OSError)
ERRORS: tuple[type[Exception], ...] = (asyncpg.PostgresError, *BROKEN)


class Direct:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        async with self.pool.acquire() as conn:
            try:
                yield conn
            except BROKEN:  # not given back as it is: the pool opens a new connection in its place
                conn.terminate()
                raise

    async def close(self) -> None:
        await self.pool.close()


async def open_direct(database_url: str) -> Direct | None:
    """A pool for a PostgreSQL URL; None for any other database."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        return None
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    return Direct(await asyncpg.create_pool(dsn, min_size=0, max_size=POOL_SIZE, reset=_keep_session))


async def _keep_session(_connection: asyncpg.Connection) -> None:
    """No RESET ALL, UNLISTEN and advisory unlock on each release: that is a round trip (half the
    CPU of a short statement) for a session state these statements never change. asyncpg still
    rolls back a transaction left open before calling this."""
