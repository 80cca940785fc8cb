"""The seed's rules on the domain objects alone: no database, no HTTP."""

from __future__ import annotations

from datetime import timedelta

import pytest

from service.domain.errors import Conflict, InvalidRequest
from service.domain.events import Change, SessionsEnded
from service.domain.model import (
    ActingBar,
    Admin,
    MfaEnrollment,
    Role,
    User,
    UserState,
    ensure_not_last_billing_admin,
    ensure_not_last_billing_api_access,
    now,
    require_acknowledgement,
)


def user(**kw: object) -> User:
    made = User("org", "Pat@Example.com", "pat", password_hash="hash")
    for k, v in kw.items():
        setattr(made, k, v)
    return made


def classic_admin(email: str = "pat@example.com") -> Admin:
    return Admin("org", email, Role.MANAGER, password_hash="old", totp_secret="sealed",
                 mfa_enrollment=MfaEnrollment.TOTP)


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"state": UserState.SUSPENDED}, "user_not_active"),
        ({"state": UserState.STAGED}, "user_not_active"),
        ({"account_locked": True}, "user_locked"),
        ({"password_expires_at": now() - timedelta(seconds=1)}, "user_password_expired"),
        ({"password_hash": None}, "user_has_no_password"),
    ],
)
def test_only_an_active_unlocked_user_with_a_valid_password_can_hold_an_admin_role(changes, code) -> None:
    with pytest.raises(Conflict) as refused:
        Admin.from_user(user(**changes), Role.BILLING, False, ["totp"])
    assert refused.value.code == code


def test_a_user_needs_an_mfa_factor_to_hold_an_admin_role() -> None:
    with pytest.raises(Conflict) as refused:
        Admin.from_user(user(), Role.BILLING, False, [])
    assert refused.value.code == "user_mfa_not_enrolled"


def test_admin_from_user_inherits_the_users_mfa_and_email() -> None:
    target = user()
    admin = Admin.from_user(target, Role.HELP_DESK, True, ["push"])
    assert (admin.email, admin.linked_user_id, admin.mfa_enrollment) == (
        target.email, target.id, MfaEnrollment.INHERITED_FROM_USER)
    assert admin.password_hash is None and admin.totp_secret is None


def test_linking_deletes_the_admins_own_credentials_and_ends_its_sessions() -> None:
    admin, target = classic_admin("PAT@example.com"), user()
    changes = admin.link_to(target, ["totp"])
    assert admin.password_hash is None and admin.totp_secret is None
    assert admin.mfa_enrollment == MfaEnrollment.LINKED_USER and admin.linked_user_id == target.id
    assert admin.auth_epoch == 1
    assert {c.field for c in changes} == {"linked_user_id", "mfa_enrollment", "password", "totp", "email"}


def test_a_linked_admins_email_is_its_users_spelling_from_the_link_on() -> None:
    admin, target = classic_admin("pat@example.com"), user()
    changes = admin.link_to(target, ["totp"])
    assert admin.email == target.email == "Pat@Example.com"
    assert Change("email", "pat@example.com", "Pat@Example.com") in changes


def test_linking_needs_matching_emails() -> None:
    admin = classic_admin("someone.else@example.com")
    with pytest.raises(Conflict) as refused:
        admin.link_to(user(), ["totp"])
    assert refused.value.code == "email_mismatch"
    assert admin.password_hash == "old" and admin.linked_user_id is None


def test_federated_admins_are_refused() -> None:
    admin = classic_admin()
    admin.federated = True
    with pytest.raises(Conflict) as refused:
        admin.link_to(user(), ["totp"])
    assert refused.value.code == "admin_federated"


def test_a_linked_admins_email_cannot_change_apart_from_its_user() -> None:
    admin = Admin.from_user(user(), Role.BILLING, False, ["totp"])
    with pytest.raises(Conflict) as refused:
        admin.change_own_email("new@example.com")
    assert refused.value.code == "admin_email_follows_user"


def test_last_billing_admin_is_kept() -> None:
    billing = classic_admin()
    billing.role = Role.BILLING
    with pytest.raises(Conflict) as refused:
        ensure_not_last_billing_admin(billing, other_capable_billing_admins=0)
    assert refused.value.code == "last_billing_admin"
    ensure_not_last_billing_admin(billing, other_capable_billing_admins=1)
    billing.role = Role.MANAGER
    ensure_not_last_billing_admin(billing, other_capable_billing_admins=0)


def test_last_billing_admin_with_api_access_keeps_it() -> None:
    billing = classic_admin()
    billing.role, billing.api_access = Role.BILLING, True
    with pytest.raises(Conflict) as refused:
        ensure_not_last_billing_api_access(billing, other_capable_billing_admins_with_api_access=0)
    assert refused.value.code == "last_billing_admin"
    ensure_not_last_billing_api_access(billing, other_capable_billing_admins_with_api_access=1)
    billing.api_access = False  # nothing to lose
    ensure_not_last_billing_api_access(billing, other_capable_billing_admins_with_api_access=0)
    billing.role, billing.api_access = Role.ADMINISTRATOR, True
    ensure_not_last_billing_api_access(billing, other_capable_billing_admins_with_api_access=0)


@pytest.mark.parametrize("value", [None, False, "true", 1])
def test_acknowledgement_must_be_literally_true(value: object) -> None:
    with pytest.raises(InvalidRequest):
        require_acknowledgement(value)


def test_suspending_and_locking_end_sessions() -> None:
    target = user()
    target.suspend()
    target.activate()
    target.lock()
    assert target.auth_epoch == 2 and not target.can_sign_in()


def test_suspend_and_lock_say_which_sessions_ended() -> None:
    target = user()
    assert target.suspend() == SessionsEnded("user", target.id)
    assert target.lock() == SessionsEnded("user", target.id)
    admin = Admin("org", "ops@example.com", Role.MANAGER)
    assert admin.end_sessions() == SessionsEnded("admin", admin.id) and admin.auth_epoch == 1


@pytest.mark.parametrize(("kw", "bar"), [
    ({}, None),
    ({"state": UserState.SUSPENDED, "account_locked": True}, ActingBar.SUSPENDED),
    ({"state": UserState.STAGED}, ActingBar.NOT_ACTIVATED),
    ({"account_locked": True, "password_hash": None}, ActingBar.LOCKED),
    ({"password_expires_at": now() - timedelta(days=1)}, ActingBar.PASSWORD_EXPIRED),
    ({"password_hash": None}, ActingBar.NO_PASSWORD),
])
def test_the_first_bar_to_acting_decides(kw: dict[str, object], bar: ActingBar | None) -> None:
    target = user(**kw)
    assert target.acting_bar() == bar
    assert target.can_sign_in() == (bar is None)
