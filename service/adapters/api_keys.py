"""Who holds an ``x-api-key``: read on every management and ops API request, so each read is one
statement, without BEGIN and COMMIT (``db.single_statements``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from service.adapters import orm
from service.adapters.crypto import token_hash
from service.domain.model import Role, UserState, as_utc, now

LAST_USED_RESOLUTION = timedelta(minutes=1)


@dataclass(frozen=True)
class KeyAdmin:
    """The admin a key belongs to, with its linked user's state when it has one."""

    id: str
    organization_id: str
    role: Role
    email: str
    api_access: bool
    linked_user_id: str | None
    user_state: UserState | None
    account_locked: bool | None


@dataclass(frozen=True)
class KeyHolder:
    key_id: str
    expires_at: datetime | None
    last_used_at: datetime | None
    admin: KeyAdmin | None  # None: the key's admin is gone


def _key_holder_statement() -> sa.Select[Any]:
    """The key, its admin and the admin's linked user, if any, in one query (outer joins: a key
    whose admin is gone still says so)."""
    keys, admins, users = orm.api_keys, orm.admins, orm.users
    return (
        sa.select(keys.c.id, keys.c.expires_at, keys.c.last_used_at, admins.c.id.label("admin_id"),
                  admins.c.organization_id, admins.c.role, admins.c.email, admins.c.api_access,
                  admins.c.linked_user_id, users.c.state.label("user_state"), users.c.account_locked)
        .select_from(keys.outerjoin(admins, sa.and_(admins.c.id == keys.c.admin_id,
                                                    admins.c.organization_id == keys.c.organization_id))
                     .outerjoin(users, sa.and_(users.c.id == admins.c.linked_user_id,
                                               users.c.organization_id == admins.c.organization_id)))
        .where(keys.c.key_hash == sa.bindparam("key_hash"))
    )


KEY_HOLDER = _key_holder_statement()  # every API request runs it: built once


class ApiKeyHolders:
    def __init__(self, single_statements: AsyncEngine) -> None:
        self.single_statements = single_statements

    async def find(self, key: str) -> KeyHolder | None:
        """The holder of the key as given (keys are stored as hashes only), or None if unknown."""
        async with self.single_statements.connect() as conn:
            row = (await conn.execute(KEY_HOLDER, {"key_hash": token_hash(key)})).one_or_none()
        if row is None:
            return None
        admin = None if row.admin_id is None else KeyAdmin(
            id=row.admin_id, organization_id=row.organization_id, role=row.role, email=row.email,
            api_access=row.api_access, linked_user_id=row.linked_user_id, user_state=row.user_state,
            account_locked=row.account_locked)
        return KeyHolder(key_id=row.id, expires_at=row.expires_at, last_used_at=row.last_used_at, admin=admin)

    async def mark_used(self, holder: KeyHolder) -> None:
        """Records that the key was used now, at most once a minute: a busy integration must not
        write on every request."""
        if holder.last_used_at is not None and as_utc(holder.last_used_at) >= now() - LAST_USED_RESOLUTION:
            return
        keys = orm.api_keys
        async with self.single_statements.connect() as conn:
            await conn.execute(sa.update(keys).where(keys.c.id == holder.key_id).values(last_used_at=now()))
