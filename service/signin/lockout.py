"""Consecutive sign-in failures and the lockout they lead to."""

from __future__ import annotations

from service.domain.errors import Conflict
from service.domain.events import Recorded
from service.domain.model import User
from service.handlers.common import guard_last_billing_admin, user_resource
from service.signin import records
from service.unit_of_work import UnitOfWork


async def count_failure(uow: UnitOfWork, user: User, threshold: int) -> None:
    """One more consecutive failure. At the threshold the user is locked and its sessions end,
    unless that would lock out the organization's last sign-in-capable Administrator with Billing:
    that lock is refused, recorded and reported to the other admins (the rate limits still slow
    the guessing down)."""
    if not user.record_failed_login(threshold):
        return
    admin = await uow.admins.by_linked_user(user.organization_id, user.id)
    if admin is not None:
        refused = Recorded("user_lockout", user_resource(user), success=False)
        try:
            await guard_last_billing_admin(uow, admin, "lock out", refused, notice="last_billing_admin_lockout_refused")
        except Conflict as refusal:
            uow.collect(refused, *refusal.notices)
            return
        uow.collect(admin.end_sessions())
    ended = user.lock()
    uow.collect(records.lockout(user), ended)
