"""The management and ops APIs' authentication: an ``x-api-key`` header names an admin's key."""

from __future__ import annotations

from aiohttp import web

from service.adapters.api_keys import KeyAdmin
from service.bootstrap import Services
from service.domain.commands import Actor
from service.domain.model import acting_bar, as_utc, now
from service.http.errors import unauthorized


def _linked_user_barred(admin: KeyAdmin) -> bool:
    """A linked admin acts only while its user may (active, not locked); a linked user the lookup
    did not find bars it too."""
    if not admin.linked_user_id:
        return False
    return admin.user_state is None or acting_bar(admin.user_state, bool(admin.account_locked)) is not None


def _client(request: web.Request) -> tuple[str | None, str | None]:
    return request.remote, request.headers.get("User-Agent")


async def actor_for_api_key(services: Services, key: str, request: web.Request) -> Actor:
    holder = await services.api_key_holders.find(key)
    if holder is None or (holder.expires_at is not None and as_utc(holder.expires_at) <= now()):
        raise unauthorized("the API key is unknown or expired")
    admin = holder.admin
    if admin is None or not admin.api_access:
        raise unauthorized("the API key's admin has no API access")
    if _linked_user_barred(admin):
        raise unauthorized("the API key's admin belongs to a suspended or locked user")
    await services.api_key_holders.mark_used(holder)
    client_ip, useragent = _client(request)
    return Actor(
        organization_id=admin.organization_id, id=admin.id, type="admin", role=admin.role, email=admin.email,
        linked_user_id=admin.linked_user_id, client_ip=client_ip, useragent=useragent,
    )
