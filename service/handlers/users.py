"""Handlers of the commands on users: create, update, delete, suspend, activate, unlock, passwords."""

from __future__ import annotations

from service.adapters.crypto import hash_password
from service.domain import commands as c
from service.domain.errors import Conflict, InvalidRequest, NotFound
from service.domain.events import Change, Recorded, Resource, SessionsEnded
from service.domain.model import User, UserState, now
from service.handlers.common import (
    Handler,
    admin_resource,
    authorize,
    authorize_on,
    authorize_on_user,
    committing,
    ensure_email_free,
    ensure_not_own_password,
    guard_last_billing_admin,
    load_authorized_user,
    load_user,
    load_user_and_admin,
    role_notice,
    user_resource,
    validate_email,
    validate_password,
)
from service.policy import Action
from service.unit_of_work import UnitOfWork


async def create_user_step(cmd: c.CreateUser, uow: UnitOfWork) -> User:
    org_id = uow.actor.organization_id
    email = validate_email(cmd.email)
    username = cmd.username.strip()
    if not username:
        raise InvalidRequest("invalid_username", "username must not be empty")
    authorize(uow, Action.CREATE_USER, False, Recorded("user_create", Resource("user", "", email=email), (),
                                                        success=False))
    if await uow.users.by_email(org_id, email):
        raise Conflict("email_taken", "another user has this email")
    if await uow.users.by_username(org_id, username):
        raise Conflict("username_taken", "another user has this username")
    user = User(org_id, email, username, cmd.firstname, cmd.lastname, state=cmd.state,
                external_id=cmd.external_id)
    if cmd.password is not None:
        user.password_hash = hash_password(validate_password(cmd.password, email))
    uow.users.add(user)
    created = [Change("state", None, user.state.value)]
    if cmd.external_id is not None:
        created.append(Change("external_id", None, cmd.external_id))
    uow.collect(Recorded("user_create", user_resource(user), tuple(created)))
    return user


create_user = committing(create_user_step)


async def update_user_step(cmd: c.UpdateUser, uow: UnitOfWork) -> User:
    user, admin = await load_authorized_user(uow, cmd.user_id, Action.UPDATE_USER, "user_update")
    changes: list[Change] = []
    for name in ("firstname", "lastname"):
        if name in cmd.changes and cmd.changes[name] != getattr(user, name):
            changes.append(Change(name, getattr(user, name), cmd.changes[name]))
            setattr(user, name, cmd.changes[name])
    if "username" in cmd.changes and cmd.changes["username"].strip() != user.username:
        username = cmd.changes["username"].strip()
        if not username:
            raise InvalidRequest("invalid_username", "username must not be empty")
        holder = await uow.users.by_username(user.organization_id, username)
        if holder is not None and holder is not user:  # a change of case keeps the user's own name
            raise Conflict("username_taken", "another user has this username")
        changes.append(Change("username", user.username, username))
        user.username = username
    if "email" in cmd.changes and cmd.changes["email"].strip() != user.email:
        email = validate_email(cmd.changes["email"])
        await ensure_email_free(uow, email, user=user, admin=admin)
        changes.append(user.change_email(email))
        if admin is not None:  # one identity: a linked admin's email follows its user's
            admin.email = email
            uow.collect(Recorded("admin_update", admin_resource(admin), (changes[-1],)))
    if changes:
        uow.collect(Recorded("user_update", user_resource(user), tuple(changes)))
    return user


update_user = committing(update_user_step)


async def delete_loaded_user(uow: UnitOfWork, user: User) -> None:
    admin = await authorize_on_user(uow, Action.DELETE_USER, user, "user_delete")
    if admin is not None:
        await guard_last_billing_admin(
            uow, admin, "delete the user", Recorded("user_delete", user_resource(user), success=False)
        )
        await uow.admins.delete(admin)
        await uow.flush()
        uow.collect(
            Recorded("admin_delete", admin_resource(admin)),
            SessionsEnded("admin", admin.id),
            role_notice("user_with_admin_role_deleted", user, admin),
        )
    await uow.users.delete(user)
    uow.collect(Recorded("user_delete", user_resource(user)), SessionsEnded("user", user.id))


async def delete_user(cmd: c.DeleteUser, uow: UnitOfWork) -> None:
    await delete_loaded_user(uow, await load_user(uow, cmd.user_id))
    await uow.commit()


async def bulk_delete_users(cmd: c.BulkDeleteUsers, uow: UnitOfWork) -> int:
    ids = list(dict.fromkeys(cmd.user_ids))
    if not ids or cmd.confirm_count != len(ids):
        raise InvalidRequest(
            "confirm_count_mismatch", f"confirm_count must be the number of users being deleted ({len(ids)})"
        )
    users = await uow.users.many(uow.actor.organization_id, ids)
    if len(users) != len(ids):
        raise NotFound("user_not_found", "some of these users do not exist; nothing was deleted")
    for user in users:
        await delete_loaded_user(uow, user)
        await uow.flush()
    await uow.commit()
    return len(users)


async def suspend_user_step(cmd: c.SuspendUser, uow: UnitOfWork) -> User:
    user, admin = await load_authorized_user(uow, cmd.user_id, Action.SUSPEND_USER, "user_suspended")
    if user.state == UserState.SUSPENDED:
        return user
    if admin is not None:
        await guard_last_billing_admin(
            uow, admin, "suspend", Recorded("user_suspended", user_resource(user), success=False)
        )
        uow.collect(admin.end_sessions())
    previous = user.state
    ended = user.suspend()
    uow.collect(
        Recorded("user_suspended", user_resource(user), (Change("state", previous.value, user.state.value),)),
        ended,
    )
    return user


suspend_user = committing(suspend_user_step)


async def activate_user_step(cmd: c.ActivateUser, uow: UnitOfWork) -> User:
    user, admin = await load_user_and_admin(uow, cmd.user_id)
    event_type = "user_unsuspended" if user.state == UserState.SUSPENDED else "user_update"
    authorize_on(uow, Action.ACTIVATE_USER, user, admin, event_type)
    if user.state == UserState.ACTIVATED:
        return user
    previous = user.state
    user.activate()
    uow.collect(Recorded(event_type, user_resource(user), (Change("state", previous.value, user.state.value),)))
    return user


activate_user = committing(activate_user_step)


async def unlock_user(cmd: c.UnlockUser, uow: UnitOfWork) -> User:
    user, _ = await load_authorized_user(uow, cmd.user_id, Action.UNLOCK_USER, "user_unlocked")
    if user.account_locked:
        user.unlock()
        uow.collect(Recorded("user_unlocked", user_resource(user), (Change("account_locked", True, False),)))
        await uow.commit()
    return user


async def force_password_reset(cmd: c.ForcePasswordReset, uow: UnitOfWork) -> User:
    user, _ = await load_authorized_user(uow, cmd.user_id, Action.FORCE_PASSWORD_RESET, "user_update")
    ensure_not_own_password(uow, user)
    user.password_expires_at = now()
    uow.collect(Recorded("user_update", user_resource(user), (Change("password_expired", False, True),)))
    await uow.commit()
    return user


async def set_password_step(cmd: c.SetPassword, uow: UnitOfWork) -> User:
    user, _ = await load_authorized_user(uow, cmd.user_id, Action.SET_PASSWORD, "user_update")
    ensure_not_own_password(uow, user)
    user.password_hash = hash_password(validate_password(cmd.password, user.email))
    user.password_expires_at = None
    uow.collect(Recorded("user_update", user_resource(user), (Change("password", None, None),)))
    return user


set_password = committing(set_password_step)


async def change_password_authority(cmd: c.ChangePasswordAuthority, uow: UnitOfWork) -> User:
    user, _ = await load_authorized_user(uow, cmd.user_id, Action.CHANGE_PASSWORD_AUTHORITY, "user_update")
    if cmd.authority != user.password_authority:
        change = Change("password_authority", user.password_authority.value, cmd.authority.value)
        user.password_authority = cmd.authority
        uow.collect(Recorded("user_update", user_resource(user), (change,)))
        await uow.commit()
    return user


HANDLERS: dict[type[c.Command], Handler] = {
    c.CreateUser: create_user,
    c.UpdateUser: update_user,
    c.DeleteUser: delete_user,
    c.BulkDeleteUsers: bulk_delete_users,
    c.SuspendUser: suspend_user,
    c.ActivateUser: activate_user,
    c.UnlockUser: unlock_user,
    c.ForcePasswordReset: force_password_reset,
    c.SetPassword: set_password,
    c.ChangePasswordAuthority: change_password_authority,
}
