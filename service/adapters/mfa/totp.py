"""TOTP codes (RFC 6238) with pyotp: accepted within one 30 s step either side of now, and a
code once accepted never again.

Replay refusal lives in the database: the step of the last accepted code is stored, and a code is
accepted only by an UPDATE that moves that step forward. Two requests racing with the same code
cannot both win, and neither can an older code after a newer one.
"""

from __future__ import annotations

import hmac
from datetime import datetime

import pyotp
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from service.adapters import orm
from service.adapters.crypto import SecretBox
from service.domain.model import now

STEP_WINDOW = 1  # steps accepted before and after the current one (clock drift, typing time)
CODE_DIGITS = 6


def matching_step(secret: str, code: str, at: datetime | None = None) -> int | None:
    """The time step whose code ``code`` is, within the window around ``at``; None if none."""
    code = code.strip()
    if len(code) != CODE_DIGITS or not code.isdigit():
        return None
    totp = pyotp.TOTP(secret)
    current = totp.timecode(at or now())
    found = None
    # Every step of the window is compared, so the time taken does not tell which one matched.
    for step in range(current - STEP_WINDOW, current + STEP_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step
    return found


async def accept_user_code(session: AsyncSession, box: SecretBox, org_id: str, user_id: str, code: str) -> bool:
    table = orm.totp_credentials
    row = (await session.execute(sa.select(table.c.id, table.c.secret_encrypted).where(
        table.c.organization_id == org_id, table.c.user_id == user_id))).one_or_none()
    if row is None:
        return False
    step = matching_step(box.open(row.secret_encrypted), code)
    if step is None:
        return False
    return await _advance(session, table, table.c.last_used_step, org_id, row.id, step)


async def accept_admin_code(session: AsyncSession, box: SecretBox, org_id: str, admin_id: str, code: str) -> bool:
    """A classic (unlinked) admin's own TOTP. A linked admin has none: it was deleted at linking."""
    table = orm.admins
    row = (await session.execute(sa.select(table.c.id, table.c.totp_secret).where(
        table.c.organization_id == org_id, table.c.id == admin_id,
        table.c.linked_user_id.is_(None)))).one_or_none()
    if row is None or row.totp_secret is None:
        return False
    step = matching_step(box.open(row.totp_secret), code)
    if step is None:
        return False
    return await _advance(session, table, table.c.totp_last_used_step, org_id, row.id, step)


async def _advance(session: AsyncSession, table: sa.Table, column: sa.Column, org_id: str, row_id: str,
                   step: int) -> bool:
    result = await session.execute(
        sa.update(table)
        .where(table.c.organization_id == org_id, table.c.id == row_id,
               sa.or_(column.is_(None), column < step))
        .values({column.name: step})
    )
    return int(result.rowcount or 0) == 1  # type: ignore[attr-defined]


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, account: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=issuer)
