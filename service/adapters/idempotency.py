"""The ``Idempotency-Key`` store: one row per (organization, key), reserved before the request runs
and completed with its answer (``service.api.idempotency`` keeps the HTTP side).

Reserving is an insert committed on its own: of two concurrent requests with the same key, the
database's primary key lets exactly one in, and the other is shown the first one's row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.adapters.orm import IDEMPOTENCY_KEY_LIFETIME
from service.adapters.orm import idempotency_keys as table
from service.domain.model import now

Where = tuple[sa.ColumnElement[bool], ...]


@dataclass(frozen=True)
class FirstRequest:
    """The request that holds a key: its fingerprint and, once it has answered, its answer
    (``status_code`` None: still running; ``response`` as stored: sealed text, or the JSON of a row
    kept before answers were sealed, or None for an answer without a body)."""

    request_fingerprint: str
    status_code: int | None
    response: Any


class IdempotencyKeys:
    def __init__(self, session_factory: async_sessionmaker[AsyncSession]) -> None:
        self.session_factory = session_factory

    async def reserve(self, org_id: str, key: str, fingerprint: str) -> FirstRequest | None:
        """Takes the key for this request (None), or answers the request that holds it. A key whose
        answer has expired is taken over as if it were new."""
        where = _where(org_id, key)
        async with self.session_factory() as session:
            try:
                async with session.begin():
                    await session.execute(table.insert().values(
                        organization_id=org_id, key=key, request_fingerprint=fingerprint, created_at=now()))
                return None
            except IntegrityError:
                pass  # the key is taken: by whom is read below
            if await _renew_expired(session, where, fingerprint):
                return None
            seen = (await session.execute(sa.select(table).where(*where))).one()
        return FirstRequest(seen.request_fingerprint, seen.status_code, seen.response)

    async def remember(self, org_id: str, key: str, status_code: int, response: str | None) -> None:
        """The answer of the request that holds the key, to replay to its retries."""
        async with self.session_factory() as session, session.begin():
            await session.execute(sa.update(table).where(*_where(org_id, key))
                                  .values(status_code=status_code, response=response))

    async def forget(self, org_id: str, key: str) -> None:
        """Frees the key: the request left nothing to replay, and a retry runs again."""
        async with self.session_factory() as session, session.begin():
            await session.execute(sa.delete(table).where(*_where(org_id, key)))


def _where(org_id: str, key: str) -> Where:
    return (table.c.organization_id == org_id, table.c.key == key)


async def _renew_expired(session: AsyncSession, where: Where, fingerprint: str) -> bool:
    """Takes over a key whose answer has expired, as if it were new. One conditional update:
    of two concurrent retries, only one finds the row still expired."""
    async with session.begin():
        renewed = await session.execute(
            sa.update(table).where(*where, table.c.created_at < now() - IDEMPOTENCY_KEY_LIFETIME)
            .values(request_fingerprint=fingerprint, status_code=None, response=None, created_at=now()))
    return bool(renewed.rowcount)  # type: ignore[attr-defined]
