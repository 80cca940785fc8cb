"""What a webhook delivery says, once ``webhooks.payloads`` has parsed it: the events of one HTTP
request in the generic schema, whatever shape the sender used. The receiver (``service.intake``)
queues them and the worker (``service.inbound``) applies them."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

SUBJECT_KEYS = ("employee_id", "external_id", "email")


@dataclass(frozen=True)
class Subject:
    employee_id: str | None = None
    external_id: str | None = None
    email: str | None = None

    def as_dict(self) -> dict[str, str]:
        return {k: v for k in SUBJECT_KEYS if (v := getattr(self, k)) is not None}


@dataclass(frozen=True)
class Event:
    type: str
    occurred_at: datetime
    subject: Subject
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Delivery:
    events: tuple[Event, ...]
    event_id: str | None = None  # the payload's own id for the delivery, when it has one
