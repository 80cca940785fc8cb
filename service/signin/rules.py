"""Who may open which portal. Pure functions over the domain objects: no I/O."""

from __future__ import annotations

from service.domain.errors import DomainError, Forbidden
from service.domain.model import ActingBar
from service.signin.lookup import Who
from service.signin.records import ADMIN_PORTAL

# The factors a sign-in can complete with. "go" is passwordless WebAuthn with a device
# authenticator; it is never offered after a password.
FACTORS = ("totp", "webauthn_device", "security_key", "push", "duo", "go")
WEBAUTHN_FACTORS = ("webauthn_device", "security_key", "go")

# A user without a password may still sign in without one (Go, a passkey): that bar is not here.
SIGN_IN_REFUSALS = {
    ActingBar.SUSPENDED: ("user_suspended", "this user is suspended"),
    ActingBar.NOT_ACTIVATED: ("user_not_active", "this user is not activated yet"),
    ActingBar.LOCKED: ("user_locked", "this user is locked out; an administrator must unlock it"),
    ActingBar.PASSWORD_EXPIRED: ("password_expired",
                                 "this user's password has expired; an administrator must reset it"),
}


def refusal(who: Who, portal: str) -> DomainError | None:
    """Why this identity may not open ``portal`` now, each reason with its own code; None if it may.
    Asked only once the password (or the passwordless credential) was right."""
    bar = who.user.acting_bar() if who.user is not None else None
    if bar in SIGN_IN_REFUSALS:
        return Forbidden(*SIGN_IN_REFUSALS[bar])
    if portal == ADMIN_PORTAL and who.admin is None:
        return Forbidden("not_an_admin", "this user holds no admin role")
    return None
