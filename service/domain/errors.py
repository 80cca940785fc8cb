"""Domain errors. Each carries a stable machine code; ``service.http.errors`` maps kinds to HTTP."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from service.domain.events import MailRequested, Recorded


class DomainError(Exception):
    """A rule of the product refused the request. ``code`` is a public contract."""

    kind = "invalid"  # invalid | forbidden | not_found | conflict

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # A refusal that must leave a trace: recorded (success: false) after the rollback.
        self.record: Recorded | None = None
        self.notices: list[MailRequested] = []


class InvalidRequest(DomainError):
    kind = "invalid"


class Forbidden(DomainError):
    kind = "forbidden"


class NotFound(DomainError):
    kind = "not_found"


class Conflict(DomainError):
    kind = "conflict"


class PermissionDenied(Forbidden):
    """The actor's admin role does not allow the action; names the role that would."""

    def __init__(self, action: str, required_role: str) -> None:
        super().__init__(
            "permission_denied",
            f"{action} on this user requires the role {required_role!r}",
        )
        self.action = action
        self.required_role = required_role
