"""The identities adminlink manages and the seed's rules about them. Pure Python, no I/O.

The classes are plain objects; ``service.adapters.orm`` maps them to tables.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

from service.domain import events
from service.domain.errors import Conflict, InvalidRequest


def now() -> datetime:
    return datetime.now(UTC)


def new_id() -> str:
    return uuid.uuid4().hex


class Role(enum.StrEnum):
    """Admin Portal roles, by their JumpCloud names."""

    READ_ONLY = "Read Only"
    HELP_DESK = "Help Desk"
    MANAGER = "Manager"
    ADMINISTRATOR = "Administrator"
    BILLING = "Administrator with Billing"


class UserState(enum.StrEnum):
    STAGED = "STAGED"
    ACTIVATED = "ACTIVATED"
    SUSPENDED = "SUSPENDED"


class PasswordAuthority(enum.StrEnum):
    ADMINLINK = "adminlink"
    SCIM = "scim"
    LDAP = "ldap"


class MfaEnrollment(enum.StrEnum):
    """The Administrators list's *MFA Enrollment* column."""

    TOTP = "totp"
    INHERITED_FROM_USER = "inherited_from_user"
    LINKED_USER = "linked_user"
    NOT_ENROLLED = "not_enrolled"


def normalise_email(email: str) -> str:
    return email.strip().lower()


def as_utc(moment: datetime) -> datetime:
    # SQLite hands datetimes back without a zone; everything stored is UTC.
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment


def aware(moment: datetime | None) -> datetime | None:
    return None if moment is None else as_utc(moment)


class ActingBar(enum.Enum):
    """What bars a user from acting: the ONE rule of who may sign in, hold an admin role or have
    its admin use the management API. Each entrypoint words the bar with its own code."""

    SUSPENDED = enum.auto()
    NOT_ACTIVATED = enum.auto()
    LOCKED = enum.auto()
    PASSWORD_EXPIRED = enum.auto()
    NO_PASSWORD = enum.auto()


def acting_bar(state: UserState, account_locked: bool, *, password_expired: bool = False,
               has_password: bool = True) -> ActingBar | None:
    """The first bar, in this order, or None. An API key does not use the password: its check
    leaves the password ones at their defaults."""
    if state == UserState.SUSPENDED:
        return ActingBar.SUSPENDED
    if state != UserState.ACTIVATED:
        return ActingBar.NOT_ACTIVATED
    if account_locked:
        return ActingBar.LOCKED
    if password_expired:
        return ActingBar.PASSWORD_EXPIRED
    if not has_password:
        return ActingBar.NO_PASSWORD
    return None


_NOT_ACTIVE = ("user_not_active", "the user must be in the ACTIVATED state to hold an admin role")
ADMIN_ROLE_REFUSALS = {
    ActingBar.SUSPENDED: _NOT_ACTIVE,
    ActingBar.NOT_ACTIVATED: _NOT_ACTIVE,
    ActingBar.LOCKED: ("user_locked", "the user is locked out; unlock the account first"),
    ActingBar.PASSWORD_EXPIRED: ("user_password_expired", "the user's password has expired"),
    ActingBar.NO_PASSWORD: ("user_has_no_password", "the user has no password to sign in with"),
}


@dataclass(eq=False)
class Organization:
    name: str
    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=now)


@dataclass(eq=False)
class User:
    organization_id: str
    email: str
    username: str
    firstname: str = ""
    lastname: str = ""
    state: UserState = UserState.ACTIVATED
    account_locked: bool = False
    failed_logins: int = 0
    password_hash: str | None = None
    password_expires_at: datetime | None = None
    password_authority: PasswordAuthority = PasswordAuthority.ADMINLINK
    mfa_required: bool = False
    auth_epoch: int = 0
    external_id: str | None = None
    scim_deleted_at: datetime | None = None
    updated_at: datetime | None = None
    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=now)

    @property
    def email_key(self) -> str:
        return normalise_email(self.email)

    def password_expired(self, at: datetime | None = None) -> bool:
        expires = aware(self.password_expires_at)
        return expires is not None and expires <= (at or now())

    def end_sessions(self) -> events.SessionsEnded:
        """Every session carries the epoch it was opened in; moving it refuses them all at commit."""
        self.auth_epoch += 1
        return events.SessionsEnded("user", self.id)

    def acting_bar(self, at: datetime | None = None) -> ActingBar | None:
        """What bars the user from acting now (signing in, holding an admin role), if anything."""
        return acting_bar(self.state, self.account_locked, password_expired=self.password_expired(at),
                          has_password=self.password_hash is not None)

    def ensure_can_hold_admin_role(self, enrolled_factors: list[str]) -> None:
        """The seed's Considerations: active, not locked, password not expired, MFA enrolled."""
        bar = self.acting_bar()
        if bar is not None:
            raise Conflict(*ADMIN_ROLE_REFUSALS[bar])
        if not enrolled_factors:
            raise Conflict("user_mfa_not_enrolled", "the user must be enrolled in at least one MFA factor")

    def change_email(self, email: str) -> events.Change:
        change = events.Change("email", self.email, email)
        self.email = email
        return change

    def suspend(self) -> events.SessionsEnded:
        self.state = UserState.SUSPENDED
        return self.end_sessions()

    def activate(self) -> None:
        self.state = UserState.ACTIVATED

    def lock(self) -> events.SessionsEnded:
        self.account_locked = True
        return self.end_sessions()

    def unlock(self) -> None:
        self.account_locked = False
        self.failed_logins = 0

    def record_failed_login(self, lockout_threshold: int) -> bool:
        """One more consecutive failed password or factor. Returns True when the account should now
        be locked (it then stays locked until unlocked through the management API)."""
        self.failed_logins += 1
        return not self.account_locked and self.failed_logins >= lockout_threshold

    def record_successful_login(self) -> None:
        self.failed_logins = 0

    def can_sign_in(self) -> bool:
        return self.acting_bar() is None


@dataclass(eq=False)
class Admin:
    organization_id: str
    email: str
    role: Role
    api_access: bool = False
    federated: bool = False
    password_hash: str | None = None
    totp_secret: str | None = None  # encrypted by the adapter before it is stored
    linked_user_id: str | None = None
    mfa_enrollment: MfaEnrollment = MfaEnrollment.NOT_ENROLLED
    auth_epoch: int = 0
    id: str = field(default_factory=new_id)
    created_at: datetime = field(default_factory=now)

    @property
    def email_key(self) -> str:
        return normalise_email(self.email)

    @property
    def is_linked(self) -> bool:
        return self.linked_user_id is not None

    def end_sessions(self) -> events.SessionsEnded:
        self.auth_epoch += 1
        return events.SessionsEnded("admin", self.id)

    def can_sign_in(self, linked_user: User | None) -> bool:
        if self.is_linked:
            return linked_user is not None and linked_user.can_sign_in()
        return self.password_hash is not None or self.federated

    @classmethod
    def from_user(cls, user: User, role: Role, api_access: bool, enrolled_factors: list[str]) -> Admin:
        """The seed's *Create admin from user*."""
        user.ensure_can_hold_admin_role(enrolled_factors)
        return cls(
            organization_id=user.organization_id,
            email=user.email,
            role=role,
            api_access=api_access,
            linked_user_id=user.id,
            mfa_enrollment=MfaEnrollment.INHERITED_FROM_USER,
        )

    def link_to(self, user: User, enrolled_factors: list[str]) -> list[events.Change]:
        """The seed's *Assign admin role to user*: the admin's own credentials are deleted for good,
        and from now on the admin's email is its user's, spelled as the user's is."""
        if self.federated:
            raise Conflict("admin_federated", "admins using federated authentication cannot be linked to a user")
        if self.is_linked:
            raise Conflict("admin_already_linked", "this admin is already linked to a user")
        if self.email_key != user.email_key:
            raise Conflict("email_mismatch", "the admin's and the user's emails must be the same")
        user.ensure_can_hold_admin_role(enrolled_factors)
        changes = [
            events.Change("linked_user_id", None, user.id),
            events.Change("mfa_enrollment", self.mfa_enrollment.value, MfaEnrollment.LINKED_USER.value),
        ]
        if self.password_hash is not None:
            changes.append(events.Change("password", "set", "deleted"))
        if self.totp_secret is not None:
            changes.append(events.Change("totp", "enrolled", "deleted"))
        if self.email != user.email:  # the same address, spelled otherwise (case, spaces)
            changes.append(events.Change("email", self.email, user.email))
            self.email = user.email
        self.linked_user_id = user.id
        self.mfa_enrollment = MfaEnrollment.LINKED_USER
        self.password_hash = None
        self.totp_secret = None
        self.end_sessions()
        return changes

    def change_role(self, role: Role) -> events.Change | None:
        if role == self.role:
            return None
        change = events.Change("role", self.role.value, role.value)
        self.role = role
        return change

    def change_own_email(self, email: str) -> events.Change:
        if self.is_linked:
            raise Conflict(
                "admin_email_follows_user",
                "a linked admin's email follows its user's; change the user's email instead",
            )
        change = events.Change("email", self.email, email)
        self.email = email
        return change


def ensure_not_last_billing_admin(admin: Admin, other_capable_billing_admins: int) -> None:
    """An organization never loses its last way in."""
    if admin.role == Role.BILLING and other_capable_billing_admins == 0:
        raise Conflict(
            "last_billing_admin",
            "this change would leave the organization without an active Administrator with Billing",
        )


def ensure_not_last_billing_api_access(admin: Admin, other_capable_billing_admins_with_api_access: int) -> None:
    """Only an Administrator with Billing manages admins, and the management API needs API
    access: without one that has both, every automation of the organization stops for good."""
    if admin.role == Role.BILLING and admin.api_access and other_capable_billing_admins_with_api_access == 0:
        raise Conflict(
            "last_billing_admin",
            "this change would leave the organization without an Administrator with Billing that has API access",
        )


def require_acknowledgement(acknowledge: object) -> None:
    if acknowledge is not True:
        raise InvalidRequest(
            "acknowledgement_required",
            "this change deletes credentials for good; send \"acknowledge\": true to confirm",
        )
