"""One handler per command: load, authorize through the policy table, call the domain, commit.

Every entrypoint (management API, SCIM, webhooks, CLI) reaches the same handlers through
``service.messagebus``.
"""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any, Protocol, TypeVar

import pyotp
from cryptography.hazmat.primitives import serialization

from service import policy
from service.adapters.crypto import hash_password, new_api_key
from service.domain import commands as c
from service.domain.errors import Conflict, DomainError, Forbidden, InvalidRequest, NotFound
from service.domain.events import Change, MailRequested, Recorded, Resource, SessionsEnded
from service.domain.model import (
    Admin,
    MfaEnrollment,
    Organization,
    Role,
    User,
    UserState,
    ensure_not_last_billing_admin,
    ensure_not_last_billing_api_access,
    now,
    require_acknowledgement,
)
from service.policy import Action
from service.unit_of_work import UnitOfWork

C = TypeVar("C", bound=c.Command)
T = TypeVar("T")

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD_LENGTH = 12


# --- helpers ---------------------------------------------------------------------------------


def user_resource(user: User) -> Resource:
    return Resource("user", user.id, email=user.email, username=user.username)


def admin_resource(admin: Admin) -> Resource:
    return Resource("admin", admin.id, email=admin.email)


def validate_email(email: str) -> str:
    email = email.strip()
    if not EMAIL_RE.match(email) or len(email) > 320:
        raise InvalidRequest("invalid_email", f"{email!r} is not an email address")
    return email


def validate_password(password: str, email: str | None = None) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidRequest("password_too_short", f"passwords need at least {MIN_PASSWORD_LENGTH} characters")
    if email and password.strip().lower() == email.strip().lower():
        raise InvalidRequest("password_is_email", "the password must not be the email address")
    return password


async def load_user(uow: UnitOfWork, user_id: str) -> User:
    user = await uow.users.get(uow.actor.organization_id, user_id)
    if user is None:
        raise NotFound("user_not_found", "no such user")
    return user


async def load_admin(uow: UnitOfWork, admin_id: str) -> Admin:
    admin = await uow.admins.get(uow.actor.organization_id, admin_id)
    if admin is None:
        raise NotFound("admin_not_found", "no such admin")
    return admin


async def load_user_and_admin(uow: UnitOfWork, user_id: str) -> tuple[User, Admin | None]:
    """The user and the admin identity it holds, if any, in one read."""
    found = await uow.users.get_with_linked_admin(uow.actor.organization_id, user_id)
    if found is None:
        raise NotFound("user_not_found", "no such user")
    return found


async def load_authorized_user(uow: UnitOfWork, user_id: str, action: Action,
                               event_type: str) -> tuple[User, Admin | None]:
    """The user and its admin identity, once the actor may take ``action`` on them."""
    user, admin = await load_user_and_admin(uow, user_id)
    authorize_on(uow, action, user, admin, event_type)
    return user, admin


async def authorize_on_user(uow: UnitOfWork, action: Action, user: User, event_type: str) -> Admin | None:
    """``authorize_on`` for a user already loaded; returns the user's admin identity, if any."""
    admin = await uow.admins.by_linked_user(uow.actor.organization_id, user.id)
    authorize_on(uow, action, user, admin, event_type)
    return admin


def authorize_on(uow: UnitOfWork, action: Action, user: User, admin: Admin | None, event_type: str) -> None:
    """Checks the actor's role against the policy table for this user, whose admin identity is
    ``admin``. A denial is recorded with ``success: false``."""
    authorize(uow, action, admin is not None, Recorded(event_type, user_resource(user), success=False))


def authorize(uow: UnitOfWork, action: Action, target_has_admin_role: bool, on_denial: Recorded) -> None:
    try:
        policy.authorize(action, uow.actor.role, target_has_admin_role)
    except DomainError as denial:
        denial.record = on_denial
        raise


async def guard_last_billing_admin(uow: UnitOfWork, admin: Admin, attempt: str, on_refusal: Recorded, *,
                                   api_access: bool = False, notice: str = "last_billing_admin_refused") -> None:
    """Refuses (and records, and tells the other admins with the ``notice`` email) a change that
    would leave the organization without an active, sign-in-capable Administrator with Billing
    (with ``api_access``: without one that also has API access)."""
    org_id = uow.actor.organization_id
    # Serialise such checks per organization: a write lock on its row, on SQLite and PostgreSQL.
    await uow.organizations.lock(org_id)
    others = await uow.admins.other_capable_billing_admins(org_id, admin.id, now(), with_api_access=api_access)
    try:
        if api_access:
            ensure_not_last_billing_api_access(admin, others)
        else:
            ensure_not_last_billing_admin(admin, others)
    except Conflict as refusal:
        refusal.record = on_refusal
        context = {"actor": uow.actor.email or uow.actor.name or uow.actor.id, "attempt": attempt,
                   "target": admin.email,
                   "left_without": "an Administrator with Billing that has API access" if api_access
                   else "an active Administrator with Billing"}
        refusal.notices = [
            MailRequested(other.email, notice, context)
            for other in await uow.admins.all(org_id)
            if other.id != admin.id
        ]
        raise


def ensure_not_own_password(uow: UnitOfWork, user: User) -> None:
    if uow.actor.linked_user_id == user.id:
        raise Forbidden(
            "use_user_portal",
            "admins cannot reset or set their own user password here; use the User Portal password change",
        )


async def ensure_email_free(uow: UnitOfWork, email: str, *, user: User | None, admin: Admin | None) -> None:
    """Emails are unique among users and among admins. A user and an unlinked admin may share one:
    that is how an admin is matched to its user."""
    org_id = uow.actor.organization_id
    if user is not None:
        other_user = await uow.users.by_email(org_id, email)
        if other_user is not None and other_user is not user:
            raise Conflict("email_taken", "another user has this email")
    if admin is not None:
        other_admin = await uow.admins.by_email(org_id, email)
        if other_admin is not None and other_admin is not admin:
            raise Conflict("email_taken", "another admin has this email")


def role_notice(template: str, user: User, admin: Admin) -> MailRequested:
    name = " ".join(p for p in (user.firstname, user.lastname) if p) or user.username
    return MailRequested(user.email, template, {"name": name, "email": user.email, "role": admin.role.value})


def committing(step: Callable[[C, UnitOfWork], Awaitable[T]]) -> Callable[[C, UnitOfWork], Awaitable[T]]:
    """The handler of a commit-free step: the step, then commit. Provisioning runs several steps
    in one transaction and commits once."""
    async def handler(cmd: C, uow: UnitOfWork) -> T:
        result = await step(cmd, uow)
        await uow.commit()
        return result
    return handler


# --- users -----------------------------------------------------------------------------------


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


async def require_totp(cmd: c.RequireTotp, uow: UnitOfWork) -> User:
    user, _ = await load_authorized_user(uow, cmd.user_id, Action.TOTP_ENROLL_RESET, "user_update")
    if await uow.totp.exists(user.organization_id, user.id):
        raise Conflict("totp_already_enrolled", "the user already has TOTP; reset it to have it enrolled anew")
    _require_mfa(uow, user)
    await uow.commit()
    return user


async def reset_totp(cmd: c.ResetTotp, uow: UnitOfWork) -> User:
    user, _ = await load_authorized_user(uow, cmd.user_id, Action.TOTP_ENROLL_RESET, "user_update")
    if not await uow.totp.delete_of_user(user.organization_id, user.id):
        raise NotFound("totp_not_enrolled", "the user has no TOTP to reset")
    uow.collect(Recorded("user_update", user_resource(user), (Change("totp", None, None),)))
    if cmd.require:
        _require_mfa(uow, user)
    await uow.commit()
    return user


def _require_mfa(uow: UnitOfWork, user: User) -> None:
    """The user must enroll MFA (TOTP in the user portal, by confirming a code)."""
    if not user.mfa_required:
        uow.collect(Recorded("user_update", user_resource(user), (Change("mfa_required", False, True),)))
        user.mfa_required = True


async def set_mfa_required(cmd: c.SetMfaRequired, uow: UnitOfWork) -> User:
    action = Action.REQUIRE_MFA if cmd.required else Action.REMOVE_MFA_REQUIREMENT
    user, _ = await load_authorized_user(uow, cmd.user_id, action, "user_update")
    if user.mfa_required != cmd.required:
        uow.collect(Recorded("user_update", user_resource(user), (Change("mfa_required", user.mfa_required,
                                                                              cmd.required),)))
        user.mfa_required = cmd.required
        await uow.commit()
    return user


class _UserCredentials(Protocol):
    async def delete(self, org_id: str, user_id: str, row_id: str) -> bool: ...


async def _delete_credential(uow: UnitOfWork, user_id: str, action: Action, rows: _UserCredentials, row_id: str,
                             field: str) -> None:
    user, _ = await load_authorized_user(uow, user_id, action, "user_update")
    if not await rows.delete(user.organization_id, user.id, row_id):
        raise NotFound(f"{field}_not_found", f"the user has no such {field.replace('_', ' ')}")
    uow.collect(Recorded("user_update", user_resource(user), (Change(field, row_id, None),)))
    await uow.commit()


async def delete_webauthn_credential(cmd: c.DeleteWebauthnCredential, uow: UnitOfWork) -> None:
    await _delete_credential(uow, cmd.user_id, Action.WEBAUTHN_CHANGE, uow.webauthn, cmd.credential_id,
                             "webauthn_credential")


async def delete_push_device(cmd: c.DeletePushDevice, uow: UnitOfWork) -> None:
    await _delete_credential(uow, cmd.user_id, Action.PUSH_CHANGE, uow.push_devices, cmd.device_id, "push_device")


async def delete_ssh_key(cmd: c.DeleteSshKey, uow: UnitOfWork) -> None:
    await _delete_credential(uow, cmd.user_id, Action.SSH_KEY_CHANGE, uow.ssh_keys, cmd.key_id, "ssh_key")


async def add_ssh_key(cmd: c.AddSshKey, uow: UnitOfWork) -> dict[str, Any]:
    user, _ = await load_authorized_user(uow, cmd.user_id, Action.SSH_KEY_CHANGE, "user_update")
    try:
        key = serialization.load_ssh_public_key(cmd.public_key.strip().encode())
    except (ValueError, TypeError) as exc:
        raise InvalidRequest("invalid_ssh_key", "public_key is not an OpenSSH public key") from exc
    raw = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    digest = hashlib.sha256(base64.b64decode(raw.split()[1])).digest()
    fingerprint = "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
    name = cmd.name.strip() or fingerprint
    key_id = await uow.ssh_keys.add(user.organization_id, user.id, name, cmd.public_key.strip(), fingerprint)
    uow.collect(Recorded("user_update", user_resource(user), (Change("ssh_key", None, fingerprint),)))
    await uow.commit()
    return {"id": key_id, "name": name, "fingerprint": fingerprint}


# --- admins ----------------------------------------------------------------------------------


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


async def issue_api_key(cmd: c.IssueApiKey, uow: UnitOfWork) -> dict[str, Any]:
    admin = await load_admin(uow, cmd.admin_id)
    authorize(uow, Action.MANAGE_ADMINS, True, Recorded("admin_update", admin_resource(admin), success=False))
    if not admin.api_access:
        raise Conflict("api_access_disabled", "enable API access for this admin first")
    key, prefix, digest = new_api_key()
    expires_at = now() + timedelta(days=365)
    key_id = await uow.api_keys.add(admin.organization_id, admin.id, prefix, digest, expires_at)
    uow.collect(Recorded("admin_update", admin_resource(admin), (Change("api_key", None, None),)))
    await uow.commit()
    return {"id": key_id, "key": key, "prefix": prefix, "expires_at": expires_at.isoformat()}


async def bootstrap_organization(cmd: c.BootstrapOrganization, uow: UnitOfWork) -> dict[str, str]:
    """Creates the organization and its first Administrator with Billing, with a password,
    TOTP and an API key, each shown once."""
    email = validate_email(cmd.email)
    if not cmd.name.strip():
        raise InvalidRequest("invalid_name", "the organization needs a name")
    org = Organization(cmd.name.strip(), id=uow.actor.organization_id)
    uow.organizations.add(org)
    await uow.flush()  # the organization row first: everything else refers to it
    password, secret = secrets.token_urlsafe(18), pyotp.random_base32()
    admin = Admin(org.id, email, Role.BILLING, api_access=True, password_hash=hash_password(password),
                  totp_secret=uow.box.seal(secret), mfa_enrollment=MfaEnrollment.TOTP)
    uow.admins.add(admin)
    await uow.flush()
    key, prefix, digest = new_api_key()
    await uow.api_keys.add(org.id, admin.id, prefix, digest)
    uow.collect(Recorded("admin_create", admin_resource(admin), (Change("role", None, admin.role.value),)))
    await uow.commit()
    return {"organization_id": org.id, "admin_id": admin.id, "email": email, "api_key": key,
            "password": password, "totp_secret": secret}


Handler = Callable[[Any, UnitOfWork], Awaitable[Any]]

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
    c.RequireTotp: require_totp,
    c.ResetTotp: reset_totp,
    c.SetMfaRequired: set_mfa_required,
    c.DeleteWebauthnCredential: delete_webauthn_credential,
    c.DeletePushDevice: delete_push_device,
    c.AddSshKey: add_ssh_key,
    c.DeleteSshKey: delete_ssh_key,
    c.CreateAdmin: create_admin,
    c.CreateAdminFromUser: create_admin_from_user,
    c.LinkAdminToUser: link_admin_to_user,
    c.AssignAdminRole: assign_admin_role,
    c.RemoveAdminAccess: remove_admin_access,
    c.UpdateAdmin: update_admin,
    c.IssueApiKey: issue_api_key,
    c.BootstrapOrganization: bootstrap_organization,
}
