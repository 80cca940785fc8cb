"""The handlers against the in-memory unit of work: no database, each test in milliseconds.

They check what a handler decides (events collected and committed, records, refusals with their
codes, permission denials from the policy table); the service tests check the same paths end to
end through the API and the database."""

from __future__ import annotations

import pytest

from service.domain import commands as c
from service.domain.errors import Conflict, DomainError, InvalidRequest, NotFound, PermissionDenied
from service.domain.events import Change, MailRequested, Recorded, SessionsEnded
from service.domain.model import MfaEnrollment, Role, UserState
from service.handlers import admins, keys, mfa, users
from tests.fakes.unit_of_work import FakeUnitOfWork

ORG = "org-1"


def unit_of_work(role: Role = Role.BILLING) -> FakeUnitOfWork:
    return FakeUnitOfWork(c.Actor(ORG, "actor-admin", "admin", role, email="boss@example.com"))


def records(uow: FakeUnitOfWork) -> list[tuple[str, bool]]:
    return [(e.event_type, e.success) for e in uow.committed if isinstance(e, Recorded)]


def ended(uow: FakeUnitOfWork) -> list[tuple[str, str]]:
    return [(e.identity_type, e.identity_id) for e in uow.committed if isinstance(e, SessionsEnded)]


def mails(uow: FakeUnitOfWork) -> list[tuple[str, str]]:
    return [(e.recipient, e.template) for e in uow.committed if isinstance(e, MailRequested)]


def denial_of(refusal: pytest.ExceptionInfo[DomainError]) -> tuple[str, bool]:
    assert refusal.value.record is not None
    return refusal.value.record.event_type, refusal.value.record.success


# --- create admin from user -----------------------------------------------------------------


async def test_create_admin_from_user_links_a_new_admin_records_and_tells_the_user() -> None:
    uow = unit_of_work()
    user = uow.given_user()
    admin = await admins.create_admin_from_user(c.CreateAdminFromUser(uow.actor, Role.MANAGER, user_id=user.id), uow)
    assert admin.linked_user_id == user.id and admin.role == Role.MANAGER
    assert admin.mfa_enrollment == MfaEnrollment.INHERITED_FROM_USER
    assert await uow.admins.by_linked_user(ORG, user.id) is admin
    assert records(uow) == [("user_update", True), ("admin_create", True)]
    assert mails(uow) == [(user.email, "admin_role_assigned")]
    assert uow.commits == 1


async def test_create_admin_from_user_by_email() -> None:
    uow = unit_of_work()
    user = uow.given_user("grace@example.com")
    admin = await admins.create_admin_from_user(
        c.CreateAdminFromUser(uow.actor, Role.READ_ONLY, email="Grace@Example.com"), uow)
    assert admin.linked_user_id == user.id


async def test_create_admin_from_user_needs_a_user() -> None:
    uow = unit_of_work()
    with pytest.raises(InvalidRequest) as refusal:
        await admins.create_admin_from_user(c.CreateAdminFromUser(uow.actor, Role.MANAGER), uow)
    assert refusal.value.code == "user_required"


async def test_create_admin_from_user_refuses_a_user_already_admin() -> None:
    uow = unit_of_work()
    user = uow.given_user()
    uow.given_admin(user.email, user=user)
    with pytest.raises(Conflict) as refusal:
        await admins.create_admin_from_user(c.CreateAdminFromUser(uow.actor, Role.MANAGER, user_id=user.id), uow)
    assert refusal.value.code == "user_already_admin"
    assert uow.committed == []


async def test_create_admin_from_user_refuses_when_an_unlinked_admin_has_the_email() -> None:
    uow = unit_of_work()
    user = uow.given_user()
    uow.given_admin(user.email)
    with pytest.raises(Conflict) as refusal:
        await admins.create_admin_from_user(c.CreateAdminFromUser(uow.actor, Role.MANAGER, user_id=user.id), uow)
    assert refusal.value.code == "admin_email_exists"


@pytest.mark.parametrize(("arrange", "code"), [
    ({"factors": ()}, "user_mfa_not_enrolled"),
    ({"state": UserState.SUSPENDED}, "user_not_active"),
    ({"password": False}, "user_has_no_password"),
])
async def test_create_admin_from_user_refuses_a_user_that_cannot_hold_a_role(arrange: dict[str, object],
                                                                             code: str) -> None:
    uow = unit_of_work()
    user = uow.given_user(**arrange)  # type: ignore[arg-type]
    with pytest.raises(Conflict) as refusal:
        await admins.create_admin_from_user(c.CreateAdminFromUser(uow.actor, Role.MANAGER, user_id=user.id), uow)
    assert refusal.value.code == code
    assert await uow.admins.by_linked_user(ORG, user.id) is None


@pytest.mark.parametrize("role", [Role.READ_ONLY, Role.HELP_DESK, Role.MANAGER, Role.ADMINISTRATOR])
async def test_only_an_administrator_with_billing_assigns_admin_roles(role: Role) -> None:
    uow = unit_of_work(role)
    user = uow.given_user()
    with pytest.raises(PermissionDenied) as refusal:
        await admins.create_admin_from_user(c.CreateAdminFromUser(uow.actor, Role.MANAGER, user_id=user.id), uow)
    assert refusal.value.code == "permission_denied"
    assert denial_of(refusal) == ("admin_create", False)
    assert uow.admins.rows == {}


# --- link an admin to its user --------------------------------------------------------------


async def test_link_admin_to_user_deletes_its_own_credentials_and_ends_its_sessions() -> None:
    uow = unit_of_work()
    user = uow.given_user()
    admin = uow.given_admin("ADA@example.com")
    linked = await admins.link_admin_to_user(c.LinkAdminToUser(uow.actor, admin.id, acknowledge=True), uow)
    assert linked.linked_user_id == user.id and linked.password_hash is None
    assert linked.email == user.email  # spelled as the user's
    assert records(uow) == [("user_update", True), ("admin_update", True)]
    assert ended(uow) == [("admin", admin.id)]
    assert mails(uow) == [(user.email, "admin_linked_to_user")]


async def test_link_admin_to_user_needs_the_acknowledgement() -> None:
    uow = unit_of_work()
    uow.given_user()
    admin = uow.given_admin("ada@example.com")
    with pytest.raises(InvalidRequest) as refusal:
        await admins.link_admin_to_user(c.LinkAdminToUser(uow.actor, admin.id, acknowledge=False), uow)
    assert refusal.value.code == "acknowledgement_required"
    assert admin.linked_user_id is None


async def test_link_admin_to_user_needs_a_user_with_the_same_email() -> None:
    uow = unit_of_work()
    uow.given_user("someone@example.com")
    admin = uow.given_admin("ada@example.com")
    with pytest.raises(NotFound) as refusal:
        await admins.link_admin_to_user(c.LinkAdminToUser(uow.actor, admin.id, acknowledge=True), uow)
    assert refusal.value.code == "matching_user_not_found"


# --- roles ----------------------------------------------------------------------------------


async def test_update_admin_changes_the_role_and_records_it() -> None:
    uow = unit_of_work()
    admin = uow.given_admin("ops@example.com", Role.HELP_DESK)
    await admins.update_admin(c.UpdateAdmin(uow.actor, admin.id, role=Role.MANAGER), uow)
    assert admin.role == Role.MANAGER
    record = next(e for e in uow.committed if isinstance(e, Recorded))
    assert record.event_type == "admin_update"
    assert Change("role", Role.HELP_DESK.value, Role.MANAGER.value) in record.changes


async def test_the_last_administrator_with_billing_keeps_the_role_and_the_others_are_told() -> None:
    uow = unit_of_work()
    last = uow.given_admin("billing@example.com", Role.BILLING)
    other = uow.given_admin("other@example.com", Role.MANAGER)
    with pytest.raises(Conflict) as refusal:
        await admins.update_admin(c.UpdateAdmin(uow.actor, last.id, role=Role.MANAGER), uow)
    assert refusal.value.code == "last_billing_admin"
    assert denial_of(refusal) == ("admin_update", False)
    assert [(m.recipient, m.template) for m in refusal.value.notices] == [(other.email,
                                                                           "last_billing_admin_refused")]
    assert last.role == Role.BILLING


async def test_a_second_administrator_with_billing_may_lose_the_role() -> None:
    uow = unit_of_work()
    first = uow.given_admin("billing@example.com", Role.BILLING)
    uow.given_admin("billing2@example.com", Role.BILLING)
    await admins.update_admin(c.UpdateAdmin(uow.actor, first.id, role=Role.ADMINISTRATOR), uow)
    assert first.role == Role.ADMINISTRATOR


async def test_remove_admin_access_deletes_the_admin_and_its_keys_and_tells_its_user() -> None:
    uow = unit_of_work()
    user = uow.given_user()
    admin = uow.given_admin(user.email, Role.MANAGER, user=user)
    await uow.api_keys.add(ORG, admin.id, "prefix", "hash")
    await admins.remove_admin_access(c.RemoveAdminAccess(uow.actor, admin.id, acknowledge=True), uow)
    assert uow.admins.rows == {} and uow.api_keys.rows == []
    assert records(uow) == [("user_update", True), ("admin_delete", True)]
    assert ended(uow) == [("admin", admin.id)]
    assert mails(uow) == [(user.email, "admin_role_removed")]


async def test_remove_admin_access_is_for_administrators_with_billing_only() -> None:
    uow = unit_of_work(Role.ADMINISTRATOR)
    admin = uow.given_admin("ops@example.com", Role.MANAGER)
    with pytest.raises(PermissionDenied) as refusal:
        await admins.remove_admin_access(c.RemoveAdminAccess(uow.actor, admin.id, acknowledge=True), uow)
    assert denial_of(refusal) == ("admin_delete", False)
    assert admin.id in uow.admins.rows


# --- suspend, activate, unlock --------------------------------------------------------------


async def test_suspend_user_ends_the_sessions_of_the_user_and_of_its_admin() -> None:
    uow = unit_of_work()
    user = uow.given_user()
    admin = uow.given_admin(user.email, Role.MANAGER, user=user)
    await users.suspend_user(c.SuspendUser(uow.actor, user.id), uow)
    assert user.state == UserState.SUSPENDED
    assert user.auth_epoch == 1 and admin.auth_epoch == 1
    assert sorted(ended(uow)) == sorted([("admin", admin.id), ("user", user.id)])
    assert records(uow) == [("user_suspended", True)]


async def test_suspending_a_suspended_user_changes_nothing() -> None:
    uow = unit_of_work()
    user = uow.given_user(state=UserState.SUSPENDED)
    await users.suspend_user(c.SuspendUser(uow.actor, user.id), uow)
    assert uow.committed == [] and user.auth_epoch == 0


async def test_help_desk_may_not_suspend_a_user_with_an_admin_role() -> None:
    uow = unit_of_work(Role.HELP_DESK)
    user = uow.given_user()
    uow.given_admin(user.email, Role.READ_ONLY, user=user)
    with pytest.raises(PermissionDenied) as refusal:
        await users.suspend_user(c.SuspendUser(uow.actor, user.id), uow)
    assert denial_of(refusal) == ("user_suspended", False)
    assert user.state == UserState.ACTIVATED


async def test_help_desk_may_suspend_a_user_without_an_admin_role() -> None:
    uow = unit_of_work(Role.HELP_DESK)
    user = uow.given_user()
    await users.suspend_user(c.SuspendUser(uow.actor, user.id), uow)
    assert user.state == UserState.SUSPENDED


async def test_suspending_the_last_administrator_with_billing_user_is_refused() -> None:
    uow = unit_of_work()
    user = uow.given_user()
    uow.given_admin(user.email, Role.BILLING, user=user)
    with pytest.raises(Conflict) as refusal:
        await users.suspend_user(c.SuspendUser(uow.actor, user.id), uow)
    assert refusal.value.code == "last_billing_admin"
    assert user.state == UserState.ACTIVATED


async def test_activate_a_suspended_user_is_recorded_as_unsuspended() -> None:
    uow = unit_of_work(Role.MANAGER)
    user = uow.given_user(state=UserState.SUSPENDED)
    await users.activate_user(c.ActivateUser(uow.actor, user.id), uow)
    assert user.state == UserState.ACTIVATED
    assert records(uow) == [("user_unsuspended", True)]


async def test_unlock_user_clears_the_lock_and_the_failures() -> None:
    uow = unit_of_work(Role.HELP_DESK)
    user = uow.given_user()
    user.lock()
    user.failed_logins = 5
    await users.unlock_user(c.UnlockUser(uow.actor, user.id), uow)
    assert not user.account_locked and user.failed_logins == 0
    assert records(uow) == [("user_unlocked", True)]


async def test_an_unknown_user_is_not_found() -> None:
    uow = unit_of_work()
    with pytest.raises(NotFound) as refusal:
        await users.suspend_user(c.SuspendUser(uow.actor, "nobody"), uow)
    assert refusal.value.code == "user_not_found"


# --- MFA ------------------------------------------------------------------------------------


async def test_reset_totp_deletes_it_and_requires_it_anew() -> None:
    uow = unit_of_work()
    user = uow.given_user()
    await mfa.reset_totp(c.ResetTotp(uow.actor, user.id, require=True), uow)
    assert not await uow.totp.exists(ORG, user.id)
    assert user.mfa_required
    assert records(uow) == [("user_update", True), ("user_update", True)]


async def test_reset_totp_of_a_user_without_totp_is_not_found() -> None:
    uow = unit_of_work()
    user = uow.given_user(factors=("push",))
    with pytest.raises(NotFound) as refusal:
        await mfa.reset_totp(c.ResetTotp(uow.actor, user.id), uow)
    assert refusal.value.code == "totp_not_enrolled"


async def test_require_totp_of_a_user_with_totp_is_refused() -> None:
    uow = unit_of_work()
    user = uow.given_user()
    with pytest.raises(Conflict) as refusal:
        await mfa.require_totp(c.RequireTotp(uow.actor, user.id), uow)
    assert refusal.value.code == "totp_already_enrolled"


async def test_delete_push_device() -> None:
    uow = unit_of_work()
    user = uow.given_user(factors=("push",))
    device = uow.push_devices.rows[0]
    await mfa.delete_push_device(c.DeletePushDevice(uow.actor, user.id, device.id), uow)
    assert uow.push_devices.rows == []
    assert records(uow) == [("user_update", True)]


async def test_delete_push_device_of_another_user_is_not_found() -> None:
    uow = unit_of_work()
    user = uow.given_user(factors=("push",))
    other = uow.given_user("other@example.com", factors=())
    device = uow.push_devices.rows[0]
    with pytest.raises(NotFound) as refusal:
        await mfa.delete_push_device(c.DeletePushDevice(uow.actor, other.id, device.id), uow)
    assert refusal.value.code == "push_device_not_found"
    assert device.user_id == user.id and uow.push_devices.rows == [device]


async def test_set_mfa_required_needs_a_role_scoped_to_users() -> None:
    uow = unit_of_work(Role.READ_ONLY)
    user = uow.given_user()
    with pytest.raises(PermissionDenied) as refusal:
        await mfa.set_mfa_required(c.SetMfaRequired(uow.actor, user.id, required=True), uow)
    assert denial_of(refusal) == ("user_update", False)
    assert not user.mfa_required


# --- API keys -------------------------------------------------------------------------------


async def test_issue_api_key_needs_api_access() -> None:
    uow = unit_of_work()
    admin = uow.given_admin("ops@example.com", Role.MANAGER)
    with pytest.raises(Conflict) as refusal:
        await keys.issue_api_key(c.IssueApiKey(uow.actor, admin.id), uow)
    assert refusal.value.code == "api_access_disabled"


async def test_issue_api_key_keeps_only_its_hash() -> None:
    uow = unit_of_work()
    admin = uow.given_admin("ops@example.com", Role.MANAGER, api_access=True)
    issued = await keys.issue_api_key(c.IssueApiKey(uow.actor, admin.id), uow)
    [row] = uow.api_keys.rows
    assert row.id == issued["id"] and row.admin_id == admin.id
    assert issued["key"] not in vars(row).values()
    assert records(uow) == [("admin_update", True)]


# --- a directory assigns a role: one command, decided in its own transaction ----------------


async def test_assign_admin_role_creates_an_admin_from_a_user_without_one() -> None:
    uow = unit_of_work()
    user = uow.given_user()
    admin = await admins.assign_admin_role(c.AssignAdminRole(uow.actor, user.id, Role.MANAGER, api_access=True),
                                             uow)
    assert admin is not None and admin.linked_user_id == user.id and admin.api_access
    assert records(uow) == [("user_update", True), ("admin_create", True)]
    assert uow.commits == 1


async def test_assign_admin_role_links_the_unlinked_admin_with_the_users_email() -> None:
    uow = unit_of_work()
    user = uow.given_user()
    classic = uow.given_admin(user.email, Role.READ_ONLY)
    admin = await admins.assign_admin_role(c.AssignAdminRole(uow.actor, user.id, Role.MANAGER), uow)
    assert admin is classic and classic.linked_user_id == user.id and classic.role == Role.MANAGER
    assert ended(uow) == [("admin", classic.id)]


async def test_assign_admin_role_changes_the_role_the_user_holds() -> None:
    uow = unit_of_work()
    user = uow.given_user()
    held = uow.given_admin(user.email, Role.READ_ONLY, user=user)
    assert await admins.assign_admin_role(c.AssignAdminRole(uow.actor, user.id, Role.MANAGER), uow) is held
    assert held.role == Role.MANAGER and records(uow) == [("admin_update", True)]


async def test_assign_admin_role_already_held_changes_nothing() -> None:
    uow = unit_of_work(Role.READ_ONLY)  # not even checked: there is nothing to do
    user = uow.given_user()
    uow.given_admin(user.email, Role.MANAGER, user=user)
    assert await admins.assign_admin_role(c.AssignAdminRole(uow.actor, user.id, Role.MANAGER), uow) is None
    assert uow.committed == []


async def test_assign_admin_role_is_for_administrators_with_billing_only() -> None:
    uow = unit_of_work(Role.ADMINISTRATOR)
    user = uow.given_user()
    with pytest.raises(PermissionDenied) as refusal:
        await admins.assign_admin_role(c.AssignAdminRole(uow.actor, user.id, Role.MANAGER), uow)
    assert denial_of(refusal) == ("admin_create", False)


async def test_assign_admin_role_to_an_unknown_user_is_not_found() -> None:
    uow = unit_of_work()
    with pytest.raises(NotFound) as refusal:
        await admins.assign_admin_role(c.AssignAdminRole(uow.actor, "nobody", Role.MANAGER), uow)
    assert refusal.value.code == "user_not_found"
