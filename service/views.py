"""Read models: what the API shows of users and admins (JumpCloud's shapes)."""

from __future__ import annotations

from typing import Any

from service.domain.model import Admin, User, aware
from service.unit_of_work import UnitOfWork


def iso(moment: Any) -> str | None:
    return aware(moment).isoformat() if moment is not None else None  # type: ignore[union-attr]


async def user(uow: UnitOfWork, user: User, admin: Admin | None = None, *, load_admin: bool = True) -> dict[str, Any]:
    if admin is None and load_admin:
        admin = await uow.admins.by_linked_user(user.organization_id, user.id)
    factors = await uow.factors.enrolled(user.organization_id, user.id)
    return {
        "id": user.id,
        "email": user.email,
        "username": user.username,
        "firstname": user.firstname,
        "lastname": user.lastname,
        "state": user.state.value,
        "account_locked": user.account_locked,
        "password_expired": user.password_expired(),
        "password_authority": user.password_authority.value,
        "mfa": {"configured": bool(factors), "required": user.mfa_required, "factors": factors},
        "admin": {"id": admin.id, "role": admin.role.value} if admin else None,
        "created": iso(user.created_at),
    }


async def users(uow: UnitOfWork, rows: list[User]) -> list[dict[str, Any]]:
    if not rows:
        return []
    admins = await uow.admins.linked_to(rows[0].organization_id, [u.id for u in rows])
    return [await user(uow, u, admins.get(u.id), load_admin=False) for u in rows]


def admin(admin: Admin, matching_user_id: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": admin.id,
        "email": admin.email,
        "role": admin.role.value,
        "linked_user_id": admin.linked_user_id,
        "api_access": admin.api_access,
        "federated": admin.federated,
        "mfa_enrollment": admin.mfa_enrollment.value,
        "created": iso(admin.created_at),
    }
    if not admin.is_linked:
        body["matching_user_id"] = matching_user_id
    return body


async def admins(uow: UnitOfWork, org_id: str) -> list[dict[str, Any]]:
    rows = await uow.admins.all(org_id)
    unlinked = [a.email for a in rows if not a.is_linked]
    matches = await uow.admins.users_matching_emails(org_id, unlinked) if unlinked else {}
    return [admin(a, matches.get(a.email_key)) for a in rows]


def job(row: Any) -> dict[str, Any]:
    """A jobs-table row as every view of it starts: what it is and when it moved."""
    return {
        "id": row.id,
        "function": row.function,
        "status": row.status,
        "tries": row.tries,
        "created": iso(row.created_at),
        "enqueued": iso(row.enqueued_at),
        "started": iso(row.started_at),
        "finished": iso(row.finished_at),
    }
