"""What every handler does the same way: load, authorize through the policy table, validate,
guard the last Administrator with Billing, and commit (or leave the commit to a caller running
several commit-free steps in one transaction)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from service import policy
from service.domain import commands as c
from service.domain.errors import Conflict, DomainError, Forbidden, InvalidRequest, NotFound
from service.domain.events import Change, MailRequested, Recorded, Resource
from service.domain.model import Admin, User, ensure_not_last_billing_admin, ensure_not_last_billing_api_access, now
from service.policy import Action
from service.unit_of_work import UnitOfWork

C = TypeVar("C", bound=c.Command)
T = TypeVar("T")

EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
MIN_PASSWORD_LENGTH = 12


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


class UserCredentials(Protocol):
    """The repository of one kind of a user's credential (WebAuthn, push devices, SSH keys)."""

    async def delete(self, org_id: str, user_id: str, row_id: str) -> bool: ...


async def delete_user_credential(uow: UnitOfWork, user_id: str, action: Action, rows: UserCredentials,
                                 row_id: str, field: str) -> None:
    user, _ = await load_authorized_user(uow, user_id, action, "user_update")
    if not await rows.delete(user.organization_id, user.id, row_id):
        raise NotFound(f"{field}_not_found", f"the user has no such {field.replace('_', ' ')}")
    uow.collect(Recorded("user_update", user_resource(user), (Change(field, row_id, None),)))
    await uow.commit()


Handler = Callable[[Any, UnitOfWork], Awaitable[Any]]
