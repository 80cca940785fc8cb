"""Database errors reach the log by their class, SQLSTATE and statement label: never with the
statement's arguments or the driver's message, which quote client values."""

from __future__ import annotations

import io
import json
import logging
from typing import Any
from urllib.parse import urlencode

import pytest
import sqlalchemy as sa
from aiohttp import web

from service.adapters import orm
from service.adapters.direct import open_direct
from service.app import create_app
from service.bootstrap import Services
from service.domain.model import new_id, now
from service.logging import DatabaseErrorFilter, JsonFormatter, TextFormatter
from tests.conftest import Api
from tests.service.test_hostile_input import raw_request
from tests.service.test_scim_support import scim_integration

MARKER = "client-value-" + new_id()


async def duplicate_key(services: Services) -> None:
    """Fails on SQLite and PostgreSQL alike; the marker is an argument (and, on PostgreSQL, in
    the message's DETAIL)."""
    row = {"organization_id": "no-org", "key": MARKER, "request_fingerprint": "x", "created_at": now()}
    async with services.session_factory() as session, session.begin():
        await session.execute(sa.insert(orm.idempotency_keys).values(**row))
        await session.execute(sa.insert(orm.idempotency_keys).values(**row))


async def bad_integer(services: Services) -> None:
    """PostgreSQL's message quotes the value it refuses."""
    async with services.session_factory() as session:
        await session.execute(sa.select(sa.cast(sa.literal(MARKER), sa.Integer)))


async def bad_integer_on_asyncpg(services: Services) -> None:
    """The same on asyncpg itself, as service/adapters/direct.py sends statements."""
    direct = await open_direct(services.settings.database_url)
    assert direct is not None
    try:
        async with direct.acquire() as conn:
            await conn.fetchval("SELECT $1::int", MARKER)
    finally:
        await direct.close()


FAILURES = {failure.__name__: failure for failure in (duplicate_key, bad_integer, bad_integer_on_asyncpg)}


def assert_marker_not_logged(records: list[logging.LogRecord]) -> None:
    for record in records:
        told = [record.getMessage(), json.dumps(vars(record), default=str)]
        if record.exc_info:
            told.append(logging.Formatter().formatException(record.exc_info))
        assert not [text for text in told if MARKER in text], record


@pytest.mark.parametrize("failure", sorted(FAILURES))
async def test_a_database_error_is_logged_without_client_values(services: Services, aiohttp_client: Any,
                                                               caplog: pytest.LogCaptureFixture, failure: str) -> None:
    if failure == "bad_integer_on_asyncpg" and services.engine.dialect.name != "postgresql":
        pytest.skip("asyncpg's own pool exists on PostgreSQL only")

    async def failing(request: web.Request) -> web.Response:
        await FAILURES[failure](services)
        return web.Response(text="the statement did not fail")

    app = create_app(services)
    app.router.add_get("/test/database-error", failing)
    client = await aiohttp_client(app)
    caplog.set_level(logging.INFO)
    response = await client.get("/test/database-error")
    if response.status == 200:
        pytest.skip(f"{failure} does not fail on this database")
    assert response.status == 500 and (await response.json())["error"]["code"] == "internal_error"
    assert_marker_not_logged(caplog.records)
    logged = [r for r in caplog.records if "unhandled" in r.getMessage()]
    assert len(logged) == 1
    assert logged[0].getMessage().startswith("unhandled ") and "/test/database-error" in logged[0].getMessage()
    assert "Error" in logged[0].getMessage() and "Traceback" in logged[0].traceback  # type: ignore[attr-defined]
    if failure == "duplicate_key":
        assert "IntegrityError" in logged[0].getMessage() and "in INSERT idempotency_keys" in logged[0].getMessage()


async def test_other_loggers_are_filtered_too(services: Services) -> None:
    """arq logs a failed job with the exception in its message and its traceback."""
    try:
        await duplicate_key(services)
    except sa.exc.IntegrityError as exc:
        error = exc
    assert MARKER in str(error)  # what would have been written
    for formatter in (JsonFormatter(), TextFormatter()):
        out = io.StringIO()
        handler = logging.StreamHandler(out)
        handler.setFormatter(formatter)
        handler.addFilter(DatabaseErrorFilter())
        logger = logging.getLogger("arq.worker.test")
        logger.addHandler(handler)
        try:
            logger.error("%6.2fs ! %s failed, %s: %s", 0.1, "job", type(error).__name__, error, exc_info=error)
        finally:
            logger.removeHandler(handler)
        written = out.getvalue()
        assert "IntegrityError" in written and "Traceback" in written
        assert MARKER not in written


async def test_a_hostile_idempotency_key_is_not_logged(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    """A key that is not UTF-8 fails in the driver (or is refused before it): its value is not
    logged either way."""
    body = b'{"email": "hostile@acme.test", "username": "hostile"}'
    caplog.set_level(logging.INFO)
    status, _, _ = await raw_request(api.client, b"POST /api/v1/users HTTP/1.1\r\nContent-Type: application/json\r\n"
                                     + f"x-api-key: {api.key}\r\n".encode()
                                     + b"Idempotency-Key: \xff" + MARKER.encode(), body)
    assert status != 201
    assert_marker_not_logged(caplog.records)


async def test_a_hostile_scim_filter_value_is_not_logged(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    """A filter's escapes decode to what PostgreSQL refuses (NUL, an unpaired surrogate): the
    value is not logged, whether the database or the service refuses it."""
    scim = await scim_integration(api)
    caplog.set_level(logging.INFO)
    for escape in ("\\u0000", "\\ud800"):
        status, _ = await scim.call("GET", "/Users?" + urlencode({"filter": f'userName eq "{escape}{MARKER}"'}))
        assert status != 200 or escape == "\\u0000"  # SQLite stores a NUL; nothing stores a lone surrogate
    assert_marker_not_logged(caplog.records)
