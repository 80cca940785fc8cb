"""Changing one's own password.

Users change theirs in the user portal, with the old one. A linked admin has no admin password
any more (the seed: only the user credentials work), so the admin side refuses with
``use_user_portal``; a classic admin changes its own admin password there. A new password ends
the identity's other sessions; the current one is replaced by a fresh session.
"""

from __future__ import annotations

import asyncio

from service.adapters.crypto import hash_password, verify_password
from service.adapters.sessions import Session
from service.domain.errors import Conflict, InvalidRequest
from service.domain.events import Change, Recorded
from service.domain.model import Admin, PasswordAuthority, User
from service.handlers.common import validate_password
from service.signin import lockout, records
from service.signin.errors import invalid_credentials
from service.signin.flows import SignedIn, Signin
from service.signin.lookup import Who
from service.signin.records import ADMIN_PORTAL, USER_PORTAL, ClientInfo
from service.signin.throttle import user_key


async def _new_hash(current_hash: str | None, old: str, new: str, email: str) -> str | None:
    """The new password's hash, or None if the old password is wrong."""
    if not await asyncio.to_thread(verify_password, current_hash, old):
        return None
    validate_password(new, email)  # minimum length, not the email
    if await asyncio.to_thread(verify_password, current_hash, new):
        raise InvalidRequest("password_unchanged", "the new password must differ from the old one")
    return await asyncio.to_thread(hash_password, new)


async def change_user_password(signin: Signin, session: Session, user: User, old: str, new: str,
                               client: ClientInfo) -> SignedIn:
    await signin.throttle.hit(ip=client.ip, account=user_key(user.organization_id, user.id))
    if user.password_authority != PasswordAuthority.ADMINLINK:
        raise Conflict("password_managed_elsewhere",
                       f"this password is managed by {user.password_authority.value}; change it there")
    new_hash = await _new_hash(user.password_hash, old, new, user.email)
    actor = records.actor_for(user.organization_id, USER_PORTAL, client, user=user, admin=None)
    async with signin.services.uow(actor) as uow:
        fresh = await uow.users.get(user.organization_id, user.id, for_update=True)
        if fresh is None:
            raise invalid_credentials()
        if new_hash is None:  # a wrong old password counts toward lockout like any other
            uow.collect(records.user_change(fresh, "password", success=False))
            await lockout.count_failure(uow, fresh, signin.settings.lockout_threshold)
            await uow.commit()
            raise invalid_credentials()
        fresh.password_hash, fresh.password_expires_at = new_hash, None
        ended = fresh.end_sessions()
        uow.collect(records.user_change(fresh, "password"), ended)
        await uow.commit()
    return await signin.open_session(Who(user.organization_id, fresh, None), USER_PORTAL, session.factor or "password",
                                     client.kind)


async def change_admin_password(signin: Signin, session: Session, admin: Admin, old: str, new: str,
                                client: ClientInfo) -> SignedIn:
    if admin.is_linked:
        raise Conflict("use_user_portal",
                       "you sign in with your user credentials; change your password in the user portal")
    await signin.throttle.hit(ip=client.ip, account=user_key(admin.organization_id, admin.id))
    new_hash = await _new_hash(admin.password_hash, old, new, admin.email)
    actor = records.actor_for(admin.organization_id, ADMIN_PORTAL, client, user=None, admin=admin)
    async with signin.services.uow(actor) as uow:
        fresh = await uow.admins.get(admin.organization_id, admin.id)
        if fresh is None:
            raise invalid_credentials()
        change = Change("password", None, None)
        if new_hash is None:
            uow.collect(Recorded("admin_update", records.admin_resource(fresh), (change,), success=False))
            await uow.commit()
            raise invalid_credentials()
        fresh.password_hash = new_hash
        ended = fresh.end_sessions()
        uow.collect(Recorded("admin_update", records.admin_resource(fresh), (change,)), ended)
        await uow.commit()
    return await signin.open_session(Who(admin.organization_id, None, fresh), ADMIN_PORTAL, session.factor or "totp",
                                     client.kind)
