"""The seed's *Understanding Permissions* table, cell by cell, against service.policy.

The expected matrix is written out here from the seed, independently of the policy table."""

from __future__ import annotations

import pytest

from service import policy
from service.domain.errors import PermissionDenied
from service.domain.model import Role
from service.policy import Action

USER_SCOPED = {Role.HELP_DESK, Role.MANAGER, Role.ADMINISTRATOR, Role.BILLING}

# Every row of the seed's table: on a user with an admin role, Administrator with Billing only;
# on other users, any role scoped to users.
SEED_ROWS = [
    Action.TOTP_ENROLL_RESET,
    Action.WEBAUTHN_CHANGE,
    Action.PUSH_CHANGE,
    Action.SSH_KEY_CHANGE,
    Action.DELETE_USER,
    Action.REMOVE_MFA_REQUIREMENT,
    Action.REQUIRE_MFA,
    Action.FORCE_PASSWORD_RESET,
    Action.SET_PASSWORD,
    Action.CHANGE_PASSWORD_AUTHORITY,
    Action.SUSPEND_USER,
    Action.ACTIVATE_USER,
    Action.UNLOCK_USER,
    Action.UPDATE_USER,  # "Other user operations not listed"
]


def expected(action: Action, role: Role, target_has_admin_role: bool) -> bool:
    if action in (Action.ASSIGN_ADMIN_ROLE, Action.REMOVE_ADMIN_ACCESS):
        return role == Role.BILLING
    if action == Action.READ_USERS:
        return True
    if target_has_admin_role:
        return role == Role.BILLING
    return role in USER_SCOPED


CELLS = [
    (action, role, has_admin)
    for action in [*SEED_ROWS, Action.ASSIGN_ADMIN_ROLE, Action.REMOVE_ADMIN_ACCESS, Action.READ_USERS]
    for role in Role
    for has_admin in (False, True)
]


@pytest.mark.parametrize(("action", "role", "has_admin"), CELLS)
def test_every_cell_of_the_seed_table(action: Action, role: Role, has_admin: bool) -> None:
    assert policy.decide(action, role, has_admin).allowed is expected(action, role, has_admin)


def test_every_action_has_a_row() -> None:
    assert set(policy.PERMISSIONS) == set(Action)


def test_denial_names_the_least_role_that_would_do() -> None:
    with pytest.raises(PermissionDenied) as on_admin:
        policy.authorize(Action.SUSPEND_USER, Role.ADMINISTRATOR, target_has_admin_role=True)
    assert on_admin.value.required_role == "Administrator with Billing"
    with pytest.raises(PermissionDenied) as on_plain:
        policy.authorize(Action.SUSPEND_USER, Role.READ_ONLY, target_has_admin_role=False)
    assert on_plain.value.required_role == "Help Desk"
    assert on_plain.value.code == "permission_denied"


def test_read_only_only_reads() -> None:
    writes = [a for a in Action if not a.value.startswith("read_")]
    assert not any(policy.decide(a, Role.READ_ONLY, t).allowed for a in writes for t in (False, True))
