"""The management and ops APIs' authentication: an ``x-api-key`` header names an admin's key."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from aiohttp import web

from service.adapters import orm
from service.adapters.crypto import token_hash
from service.bootstrap import Services
from service.domain.commands import Actor
from service.domain.model import acting_bar, as_utc, now
from service.http.errors import unauthorized

LAST_USED_RESOLUTION = timedelta(minutes=1)


def _client(request: web.Request) -> tuple[str | None, str | None]:
    return request.remote, request.headers.get("User-Agent")


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


async def actor_for_api_key(services: Services, key: str, request: web.Request) -> Actor:
    async with services.single_statements.connect() as conn:
        row = (await conn.execute(KEY_HOLDER, {"key_hash": token_hash(key)})).one_or_none()
        if row is None or (row.expires_at is not None and as_utc(row.expires_at) <= now()):
            raise unauthorized("the API key is unknown or expired")
        if row.admin_id is None or not row.api_access:
            raise unauthorized("the API key's admin has no API access")
        if row.linked_user_id and acting_bar(row.user_state, row.account_locked) is not None:
            raise unauthorized("the API key's admin belongs to a suspended or locked user")
        if row.last_used_at is None or as_utc(row.last_used_at) < now() - LAST_USED_RESOLUTION:
            # At most one write a minute per key: a busy integration must not write on every request.
            keys = orm.api_keys
            await conn.execute(sa.update(keys).where(keys.c.id == row.id).values(last_used_at=now()))
    client_ip, useragent = _client(request)
    return Actor(
        organization_id=row.organization_id, id=row.admin_id, type="admin", role=row.role, email=row.email,
        linked_user_id=row.linked_user_id, client_ip=client_ip, useragent=useragent,
    )
