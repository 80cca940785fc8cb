"""What happened. Handlers collect these; the unit of work turns them into Directory Insights
records and side-effect jobs in the same transaction as the change."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Change:
    field: str
    from_: Any
    to: Any


@dataclass(frozen=True)
class Resource:
    type: str  # "user" | "admin" | "api_key" | ...
    id: str
    email: str | None = None
    username: str | None = None


@dataclass(frozen=True)
class Recorded:
    """One Directory Insights record, named with JumpCloud's event type."""

    event_type: str
    resource: Resource
    changes: tuple[Change, ...] = ()
    success: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SessionsEnded:
    """Housekeeping after an auth epoch moved: the epoch already refuses the sessions."""

    identity_type: str  # "user" | "admin"
    identity_id: str


@dataclass(frozen=True)
class MailRequested:
    recipient: str
    template: str
    context: dict[str, str]


Event = Recorded | SessionsEnded | MailRequested
