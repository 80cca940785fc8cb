"""Who may open which portal. Pure functions over the domain objects: no I/O."""

from __future__ import annotations

from service.domain.errors import DomainError, Forbidden
from service.domain.model import UserState
from service.signin.lookup import Who
from service.signin.records import ADMIN_PORTAL

# The factors a sign-in can complete with. "go" is passwordless WebAuthn with a device
# authenticator; it is never offered after a password.
FACTORS = ("totp", "webauthn_device", "security_key", "push", "duo", "go")
WEBAUTHN_FACTORS = ("webauthn_device", "security_key", "go")


def refusal(who: Who, portal: str) -> DomainError | None:
    """Why this identity may not open ``portal`` now, each reason with its own code; None if it may.
    Asked only once the password (or the passwordless credential) was right."""
    user = who.user
    if user is not None:
        if user.state == UserState.SUSPENDED:
            return Forbidden("user_suspended", "this user is suspended")
        if user.state != UserState.ACTIVATED:
            return Forbidden("user_not_active", "this user is not activated yet")
        if user.account_locked:
            return Forbidden("user_locked", "this user is locked out; an administrator must unlock it")
        if user.password_expired():
            return Forbidden("password_expired", "this user's password has expired; an administrator must reset it")
    if portal == ADMIN_PORTAL and who.admin is None:
        return Forbidden("not_an_admin", "this user holds no admin role")
    return None
