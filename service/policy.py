"""The permission matrix: the seed's *Understanding Permissions* as one data table.

Every permission decision in adminlink is a lookup here. A cell is the set of actor roles
allowed to take an action, depending on whether the target user holds an admin role.

Where the seed's *Considerations* and its table disagree (the Considerations say a role scoped
to users can suspend a user with an admin role; the table says Administrator with Billing), the
table wins: on a user holding an admin role, suspend & activate need Administrator with Billing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from service.domain.errors import PermissionDenied
from service.domain.model import Role


class Action(enum.StrEnum):
    READ_USERS = "read_users"
    CREATE_USER = "create_user"
    UPDATE_USER = "update_user"  # "Other user operations not listed"
    DELETE_USER = "delete_user"
    SUSPEND_USER = "suspend_user"
    ACTIVATE_USER = "activate_user"
    UNLOCK_USER = "unlock_user"
    FORCE_PASSWORD_RESET = "force_password_reset"
    SET_PASSWORD = "set_password"
    CHANGE_PASSWORD_AUTHORITY = "change_password_authority"
    TOTP_ENROLL_RESET = "totp_enroll_reset"
    WEBAUTHN_CHANGE = "webauthn_change"
    PUSH_CHANGE = "push_change"
    SSH_KEY_CHANGE = "ssh_key_change"
    REQUIRE_MFA = "require_mfa"
    REMOVE_MFA_REQUIREMENT = "remove_mfa_requirement"
    ASSIGN_ADMIN_ROLE = "assign_admin_role"
    REMOVE_ADMIN_ACCESS = "remove_admin_access"
    READ_ADMINS = "read_admins"
    MANAGE_ADMINS = "manage_admins"
    READ_MAIL_OUTBOX = "read_mail_outbox"
    MANAGE_INTEGRATIONS = "manage_integrations"
    MANAGE_GROUPS = "manage_groups"  # SCIM groups: create, rename, members, delete
    READ_JOBS = "read_jobs"  # ops: queues, job listings and details, metrics
    OPERATE_JOBS = "operate_jobs"  # ops: retry and abort
    READ_INSIGHTS = "read_insights"  # Directory Insights query API
    CONFIGURE_DUO = "configure_duo"
    READ_JOB_STATUS = "read_job_status"  # one job by its id: the status_url a webhook answers


ALL_ROLES = frozenset(Role)
USER_SCOPED = frozenset({Role.HELP_DESK, Role.MANAGER, Role.ADMINISTRATOR, Role.BILLING})
OPERATORS = frozenset({Role.ADMINISTRATOR, Role.BILLING})
BILLING_ONLY = frozenset({Role.BILLING})


@dataclass(frozen=True)
class Cell:
    on_plain_user: frozenset[Role]
    on_admin_role_user: frozenset[Role]


# action -> (roles allowed on a user without an admin role, roles allowed on a user with one)
PERMISSIONS: dict[Action, Cell] = {
    Action.READ_USERS: Cell(ALL_ROLES, ALL_ROLES),
    Action.CREATE_USER: Cell(USER_SCOPED, USER_SCOPED),
    Action.UPDATE_USER: Cell(USER_SCOPED, BILLING_ONLY),
    Action.DELETE_USER: Cell(USER_SCOPED, BILLING_ONLY),
    Action.SUSPEND_USER: Cell(USER_SCOPED, BILLING_ONLY),
    Action.ACTIVATE_USER: Cell(USER_SCOPED, BILLING_ONLY),
    Action.UNLOCK_USER: Cell(USER_SCOPED, BILLING_ONLY),
    Action.FORCE_PASSWORD_RESET: Cell(USER_SCOPED, BILLING_ONLY),
    Action.SET_PASSWORD: Cell(USER_SCOPED, BILLING_ONLY),
    Action.CHANGE_PASSWORD_AUTHORITY: Cell(USER_SCOPED, BILLING_ONLY),
    Action.TOTP_ENROLL_RESET: Cell(USER_SCOPED, BILLING_ONLY),
    Action.WEBAUTHN_CHANGE: Cell(USER_SCOPED, BILLING_ONLY),
    Action.PUSH_CHANGE: Cell(USER_SCOPED, BILLING_ONLY),
    Action.SSH_KEY_CHANGE: Cell(USER_SCOPED, BILLING_ONLY),
    Action.REQUIRE_MFA: Cell(USER_SCOPED, BILLING_ONLY),
    Action.REMOVE_MFA_REQUIREMENT: Cell(USER_SCOPED, BILLING_ONLY),
    # Only Administrator with Billing assigns, updates or removes admin roles.
    Action.ASSIGN_ADMIN_ROLE: Cell(BILLING_ONLY, BILLING_ONLY),
    Action.REMOVE_ADMIN_ACCESS: Cell(BILLING_ONLY, BILLING_ONLY),
    Action.READ_ADMINS: Cell(ALL_ROLES, ALL_ROLES),
    Action.MANAGE_ADMINS: Cell(BILLING_ONLY, BILLING_ONLY),
    Action.READ_MAIL_OUTBOX: Cell(OPERATORS, OPERATORS),
    Action.MANAGE_INTEGRATIONS: Cell(BILLING_ONLY, BILLING_ONLY),
    # Groups that SCIM providers push: a role scoped to users manages them (reading them is
    # reading the directory: READ_USERS).
    Action.MANAGE_GROUPS: Cell(USER_SCOPED, USER_SCOPED),
    Action.READ_JOBS: Cell(OPERATORS, OPERATORS),
    Action.OPERATE_JOBS: Cell(OPERATORS, OPERATORS),
    # Security and compliance teams often hold Read Only; every role may read the audit trail.
    Action.READ_INSIGHTS: Cell(ALL_ROLES, ALL_ROLES),
    # Duo settings decide how every admin of the organization signs in.
    Action.CONFIGURE_DUO: Cell(BILLING_ONLY, BILLING_ONLY),
    # Whoever may read users may follow what a webhook event did to them.
    Action.READ_JOB_STATUS: Cell(ALL_ROLES, ALL_ROLES),
}

_RANK = [Role.READ_ONLY, Role.HELP_DESK, Role.MANAGER, Role.ADMINISTRATOR, Role.BILLING]


@dataclass(frozen=True)
class Decision:
    allowed: bool
    required_role: Role


def decide(action: Action, actor_role: Role, target_has_admin_role: bool) -> Decision:
    cell = PERMISSIONS[action]
    allowed_roles = cell.on_admin_role_user if target_has_admin_role else cell.on_plain_user
    least = min(allowed_roles, key=_RANK.index)
    return Decision(actor_role in allowed_roles, least)


def authorize(action: Action, actor_role: Role, target_has_admin_role: bool = False) -> None:
    decision = decide(action, actor_role, target_has_admin_role)
    if not decision.allowed:
        raise PermissionDenied(action.value, decision.required_role.value)
