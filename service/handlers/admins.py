"""Handlers of the commands on admins and admin roles: the seed's create admin from user, link
admin to user, remove admin access, role changes, and a directory's role assignment."""

from __future__ import annotations

import pyotp

from service.adapters.crypto import hash_password
from service.domain import commands as c
from service.domain.errors import Conflict, InvalidRequest, NotFound
from service.domain.events import Change, Recorded, Resource, SessionsEnded
from service.domain.model import Admin, MfaEnrollment, Role, require_acknowledgement
from service.handlers.common import (
    Handler,
    admin_resource,
    authorize,
    authorize_on_user,
    committing,
    ensure_email_free,
    guard_last_billing_admin,
    load_admin,
    load_user,
    load_user_and_admin,
    role_notice,
    user_resource,
    validate_email,
    validate_password,
)
from service.policy import Action
from service.unit_of_work import UnitOfWork


async def create_admin(cmd: c.CreateAdmin, uow: UnitOfWork) -> tuple[Admin, str]:
    email = validate_email(cmd.email)
    authorize(uow, Action.MANAGE_ADMINS, True, Recorded("admin_create", Resource("admin", "", email=email),
                                                         success=False))
    if await uow.admins.by_email(uow.actor.organization_id, email):
        raise Conflict("email_taken", "another admin has this email")
    secret = pyotp.random_base32()
    admin = Admin(
        uow.actor.organization_id, email, cmd.role, api_access=cmd.api_access,
        password_hash=hash_password(validate_password(cmd.password, email)),
        totp_secret=uow.box.seal(secret), mfa_enrollment=MfaEnrollment.TOTP,
    )
    uow.admins.add(admin)
    uow.collect(Recorded("admin_create", admin_resource(admin), (Change("role", None, admin.role.value),)))
    await uow.commit()
    return admin, secret


async def create_admin_from_user_step(cmd: c.CreateAdminFromUser, uow: UnitOfWork) -> Admin:
    org_id = uow.actor.organization_id
    if cmd.user_id:
        user = await load_user(uow, cmd.user_id)
    elif cmd.email:
        found = await uow.users.by_email(org_id, cmd.email)
        if found is None:
            raise NotFound("user_not_found", "no user has this email")
        user = found
    else:
        raise InvalidRequest("user_required", "give user_id or email")
    existing = await authorize_on_user(uow, Action.ASSIGN_ADMIN_ROLE, user, "admin_create")
    if existing is not None:
        raise Conflict("user_already_admin", "this user already holds an admin role")
    if await uow.admins.by_email(org_id, user.email):
        raise Conflict(
            "admin_email_exists", "an admin with this email exists; link it to the user with link-user instead"
        )
    admin = Admin.from_user(user, cmd.role, cmd.api_access, await uow.factors.enrolled(org_id, user.id))
    uow.admins.add(admin)
    uow.collect(
        Recorded("user_update", user_resource(user), (Change("admin", None, admin.role.value),)),
        Recorded("admin_create", admin_resource(admin), (Change("linked_user_id", None, user.id),
                                                         Change("role", None, admin.role.value))),
        role_notice("admin_role_assigned", user, admin),
    )
    return admin


create_admin_from_user = committing(create_admin_from_user_step)


async def link_admin_to_user_step(cmd: c.LinkAdminToUser, uow: UnitOfWork) -> Admin:
    org_id = uow.actor.organization_id
    admin = await load_admin(uow, cmd.admin_id)
    authorize(uow, Action.ASSIGN_ADMIN_ROLE, True, Recorded("admin_update", admin_resource(admin), success=False))
    require_acknowledgement(cmd.acknowledge)
    user = await uow.users.by_email(org_id, admin.email)
    if user is None:
        raise NotFound("matching_user_not_found", "no user has this admin's email; make the emails match first")
    holder = await uow.admins.by_linked_user(org_id, user.id)
    if holder is not None and holder is not admin:
        raise Conflict("user_already_admin", "this user already holds an admin role")
    changes = admin.link_to(user, await uow.factors.enrolled(org_id, user.id))
    if cmd.role is not None and cmd.role != admin.role:
        denial = Recorded("admin_update", admin_resource(admin), success=False)
        authorize(uow, Action.MANAGE_ADMINS, True, denial)
        changes.append(await change_admin_role(uow, admin, cmd.role, denial))
    uow.collect(
        Recorded("user_update", user_resource(user), (Change("admin", None, admin.role.value),)),
        Recorded("admin_update", admin_resource(admin), tuple(changes)),
        SessionsEnded("admin", admin.id),
        role_notice("admin_linked_to_user", user, admin),
    )
    return admin


link_admin_to_user = committing(link_admin_to_user_step)


async def assign_admin_role_step(cmd: c.AssignAdminRole, uow: UnitOfWork) -> Admin | None:
    """The user holds ``cmd.role`` afterwards, whichever of the seed's ways gets it there, decided
    on what this transaction reads: a role already held changes, an unlinked admin with the
    user's email is linked to it, or an admin is created from the user. None: it held the role."""
    user, admin = await load_user_and_admin(uow, cmd.user_id)
    if admin is not None:
        if admin.role == cmd.role:
            return None
        return await update_admin_step(c.UpdateAdmin(cmd.actor, admin.id, role=cmd.role), uow)
    same_email = await uow.admins.by_email(uow.actor.organization_id, user.email)
    if same_email is not None and not same_email.is_linked:
        return await link_admin_to_user_step(
            c.LinkAdminToUser(cmd.actor, same_email.id, acknowledge=True, role=cmd.role), uow)
    return await create_admin_from_user_step(
        c.CreateAdminFromUser(cmd.actor, cmd.role, user_id=user.id, api_access=cmd.api_access), uow)


assign_admin_role = committing(assign_admin_role_step)


async def remove_admin_access(cmd: c.RemoveAdminAccess, uow: UnitOfWork) -> None:
    admin = await load_admin(uow, cmd.admin_id)
    denial = Recorded("admin_delete", admin_resource(admin), success=False)
    authorize(uow, Action.REMOVE_ADMIN_ACCESS, True, denial)
    require_acknowledgement(cmd.acknowledge)
    await guard_last_billing_admin(uow, admin, "remove admin access of", denial)
    user = await uow.users.get(admin.organization_id, admin.linked_user_id) if admin.linked_user_id else None
    await uow.api_keys.delete_of_admin(admin.organization_id, admin.id)
    await uow.admins.delete(admin)
    if user is not None:
        uow.collect(
            Recorded("user_update", user_resource(user), (Change("admin", admin.role.value, None),)),
            role_notice("admin_role_removed", user, admin),
        )
    uow.collect(Recorded("admin_delete", admin_resource(admin)), SessionsEnded("admin", admin.id))
    await uow.commit()


async def update_admin_step(cmd: c.UpdateAdmin, uow: UnitOfWork) -> Admin:
    admin = await load_admin(uow, cmd.admin_id)
    denial = Recorded("admin_update", admin_resource(admin), success=False)
    authorize(uow, Action.MANAGE_ADMINS, True, denial)
    changes: list[Change] = []
    if cmd.role is not None and cmd.role != admin.role:
        changes.append(await change_admin_role(uow, admin, cmd.role, denial))
    if cmd.api_access is not None and cmd.api_access != admin.api_access:
        if not cmd.api_access:
            await guard_last_billing_admin(uow, admin, "turn off API access of", denial, api_access=True)
        changes.append(Change("api_access", admin.api_access, cmd.api_access))
        admin.api_access = cmd.api_access
    if cmd.email is not None and cmd.email.strip() != admin.email:
        email = validate_email(cmd.email)
        if not admin.is_linked:
            await ensure_email_free(uow, email, user=None, admin=admin)
        changes.append(admin.change_own_email(email))  # a linked admin's email follows its user's
    if changes:
        uow.collect(Recorded("admin_update", admin_resource(admin), tuple(changes)))
    return admin


update_admin = committing(update_admin_step)


async def change_admin_role(uow: UnitOfWork, admin: Admin, role: Role, denial: Recorded) -> Change:
    """A new role for an admin (the caller checked the policy table): never the organization's
    last capable Administrator with Billing's."""
    if admin.role == Role.BILLING:
        await guard_last_billing_admin(uow, admin, f"change the role to {role.value} of", denial)
    change = admin.change_role(role)
    assert change is not None, "the caller changes the role only to another one"
    return change


HANDLERS: dict[type[c.Command], Handler] = {
    c.CreateAdmin: create_admin,
    c.CreateAdminFromUser: create_admin_from_user,
    c.LinkAdminToUser: link_admin_to_user,
    c.AssignAdminRole: assign_admin_role,
    c.RemoveAdminAccess: remove_admin_access,
    c.UpdateAdmin: update_admin,
}
