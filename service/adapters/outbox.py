"""The mail outbox as the send-email job works it: one pending message sent at most once while
its row is locked."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from service.adapters.orm import mail_outbox
from service.domain.model import now


@dataclass(frozen=True)
class PendingMail:
    id: str
    recipient: str
    subject: str
    body: str


# Sends the message and answers the status its row takes: ``sent``, or ``kept`` when no server
# delivers mail and the outbox is where it is read.
Send = Callable[[PendingMail], Awaitable[str]]


class MailOutbox:
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    async def send_pending(self, mail_id: str, send: Send) -> str | None:
        """Runs ``send`` on the message if it is still pending and marks it with the status
        ``send`` answers; None if it is unknown or already handled. The row stays locked (SELECT
        ... FOR UPDATE) from the read until the mark, both on the one connection, in one
        transaction: two runs of one job cannot both send it."""
        table = mail_outbox
        async with self.engine.begin() as conn:
            query = sa.select(table).where(table.c.id == mail_id).with_for_update()
            mail = (await conn.execute(query)).one_or_none()
            if mail is None or mail.status != "pending":
                return None
            status = await send(PendingMail(mail.id, mail.recipient, mail.subject, mail.body))
            await conn.execute(sa.update(table).where(table.c.id == mail.id).values(status=status, sent_at=now()))
        return status
