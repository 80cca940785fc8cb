"""Sign-in refusals. Codes are a public contract (docs/signin.md).

A wrong email, password or factor always gives the same ``invalid_credentials`` answer, so no
response tells whether an account exists. Account-specific codes (suspended, locked, ...) are
given only after the password was right.
"""

from __future__ import annotations

from service.domain.errors import DomainError, Forbidden

GENERIC = ("the username or email, password or verification is not right; if it belongs to several "
           "organizations, send organization_id")


class Unauthorized(DomainError):
    kind = "unauthorized"


class Unavailable(DomainError):
    kind = "unavailable"  # an outside service (Duo) did not answer: 503


class RateLimited(DomainError):
    kind = "rate_limited"

    def __init__(self, retry_after: int, code: str = "rate_limited",
                 message: str = "too many sign-in attempts; wait before trying again") -> None:
        super().__init__(code, message)
        self.retry_after = retry_after


def invalid_credentials() -> Unauthorized:
    return Unauthorized("invalid_credentials", GENERIC)


def challenge_expired() -> Unauthorized:
    return Unauthorized("challenge_expired", "this sign-in has expired or was already used; start again")


def push_expired() -> Unauthorized:
    return Unauthorized("push_expired", "the push was not answered in time; send a new one")


def go_not_allowed() -> Forbidden:
    return Forbidden(
        "go_not_allowed",
        "Go opens the admin portal only from a user-portal session that was itself signed in with Go",
    )


class UnfamiliarBlocked(RateLimited):
    """Too many failures on this email from clients without its known-device cookie: such clients
    are held off for a while; a familiar client still signs in (docs/signin.md)."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(retry_after, "unfamiliar_client_blocked",
                         "too many failed sign-ins for this account from unfamiliar devices; sign in from a "
                         "device that signed in to it before, or wait")
