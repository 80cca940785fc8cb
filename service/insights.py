"""Directory Insights records in JumpCloud's event shape. Secret values never enter a record."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from service.domain.commands import Actor
from service.domain.events import Change, Recorded

# Field names whose values are secrets: a record says that they changed, never what to.
SECRET_FIELDS = frozenset({"password", "totp", "totp_secret", "api_key", "secret", "token"})


def _change(change: Change) -> dict[str, Any]:
    if change.field in SECRET_FIELDS:
        return {"field": change.field, "from": None, "to": None}
    return {"field": change.field, "from": change.from_, "to": change.to}


def initiated_by(actor: Actor) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": actor.id,
        "type": actor.type,
        "email": actor.email,
        "administrator": actor.type == "admin",
        "source": actor.source,
    }
    if actor.linked_user_id:
        body["user_id"] = actor.linked_user_id
    if actor.name:
        body["name"] = actor.name
    return body


def record_body(event_id: str, event: Recorded, actor: Actor, at: datetime) -> dict[str, Any]:
    resource: dict[str, Any] = {"id": event.resource.id, "type": event.resource.type}
    if event.resource.email is not None:
        resource["email"] = event.resource.email
    if event.resource.username is not None:
        resource["username"] = event.resource.username
    body: dict[str, Any] = {
        "id": event_id,
        "event_type": event.event_type,
        "service": "directory",
        "timestamp": at.isoformat().replace("+00:00", "Z"),
        "organization": actor.organization_id,
        "initiated_by": initiated_by(actor),
        "resource": resource,
        "changes": [_change(c) for c in event.changes],
        "client_ip": actor.client_ip,
        "useragent": actor.useragent,
        "success": event.success,
        "auth_method": actor.auth_method,
    }
    body.update(event.extra)
    return body
