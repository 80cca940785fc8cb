"""Webhook payloads: the generic event schema, and adapters that turn BambooHR's and Personio's
own shapes into it. Parsing only: nothing here touches the database.

A delivery (one HTTP request) holds one or more events; every event names its type, when it
occurred, the user it is about (``subject``) and the data its type needs. docs/webhooks.md shows
each shape with an example.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from service.deliveries import SUBJECT_KEYS, Delivery, Event, Subject
from service.domain.text import unstorable_text
from service.http.inputs import UNSTORABLE, strict_json

HR_TYPES = frozenset({
    "employee.terminated", "employee.suspended", "employee.leave_started", "employee.returned",
    "employee.email_changed",
})
DIRECTORY_TYPES = frozenset({
    "user.suspended", "user.activated", "user.deleted", "user.email_changed",
    "admin_role.assigned", "admin_role.removed",
})
TYPES_BY_KIND = {"hr": HR_TYPES, "directory": DIRECTORY_TYPES}
# Types whose data must carry a field, and the field.
REQUIRED_DATA = {"employee.email_changed": "email", "user.email_changed": "email", "admin_role.assigned": "role"}
MAX_ID = 200
# An event dated this far ahead of our clock is refused: a far-future date would make every later
# event of its user look older, and so stale, for good.
FUTURE_TOLERANCE = timedelta(minutes=5)


class PayloadError(Exception):
    """The body cannot be taken as it is; ``code`` is a public contract."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def invalid(message: str) -> PayloadError:
    return PayloadError(422, "invalid_payload", message)


def parse(provider: str, kind: str, body: bytes) -> Delivery:
    """The events of one delivery, in the generic schema, checked against the integration's kind."""
    document = _json(body)
    # Only an escape (\u...) or a non-ASCII byte can bring a NUL or a lone surrogate: most bodies skip the walk.
    if (b"\\u" in body or not body.isascii()) and unstorable_text(document):
        raise invalid(UNSTORABLE)
    adapter = ADAPTERS.get(provider, generic)
    delivery = adapter(document)
    for event in delivery.events:
        _check(event, kind)
    return delivery


def _json(body: bytes) -> Any:
    try:
        return strict_json(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise PayloadError(400, "invalid_json", "the body is not valid JSON") from exc


def _check(event: Event, kind: str) -> None:
    if event.type not in TYPES_BY_KIND[kind]:
        allowed = ", ".join(sorted(TYPES_BY_KIND[kind]))
        raise PayloadError(422, "unknown_event_type",
                           f"{event.type!r} is not an event type of a {kind} integration ({allowed})")
    if not event.subject.as_dict():
        raise PayloadError(422, "unknown_subject", "subject must name an email, employee_id or external_id")
    needed = REQUIRED_DATA.get(event.type)
    if needed and not isinstance(event.data.get(needed), str):
        raise invalid(f"{event.type} needs data.{needed} (a string)")
    if event.occurred_at > datetime.now(UTC) + FUTURE_TOLERANCE:
        raise PayloadError(422, "occurred_at_in_future", "occurred_at is in the future")


# --- field readers ---------------------------------------------------------------------------


def _object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise invalid(f"{name} must be a JSON object")
    return value


def _text(value: Any, name: str, *, required: bool = True, max_length: int = MAX_ID) -> str | None:
    if value is None and not required:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)  # HR systems send numeric employee ids
    if not isinstance(value, str) or not value.strip():
        raise invalid(f"{name} must be a non-empty string")
    if len(value) > max_length:
        raise invalid(f"{name} is longer than {max_length} characters")
    return value.strip()


def _moment(value: Any, name: str) -> datetime:
    if not isinstance(value, str):
        raise invalid(f"{name} must be an ISO 8601 date-time")
    try:
        moment = datetime.fromisoformat(value.strip())
        # A date-time without an offset is taken as UTC, as every sender here documents.
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise invalid(f"{name} must be an ISO 8601 date-time") from exc


def _subject(value: Any) -> Subject:
    if not isinstance(value, dict):
        raise PayloadError(422, "unknown_subject", "subject must be an object naming email, employee_id or "
                                                   "external_id")
    found = {k: _text(value.get(k), f"subject.{k}", required=False, max_length=320) for k in SUBJECT_KEYS}
    return Subject(**found)


# --- generic ---------------------------------------------------------------------------------


def generic(document: Any) -> Delivery:
    """``{"id", "type", "occurred_at", "subject": {...}, "data": {...}}``."""
    body = _object(document, "the body")
    event = Event(
        type=_text(body.get("type"), "type") or "",
        occurred_at=_moment(body.get("occurred_at"), "occurred_at"),
        subject=_subject(body.get("subject")),
        data=_object(body.get("data", {}), "data"),
    )
    return Delivery((event,), _text(body.get("id"), "id", required=False))


# --- BambooHR (field-based webhooks, JSON) ---------------------------------------------------

BAMBOO_EMAIL = "Work Email"


def bamboohr(document: Any) -> Delivery:
    """``{"employees": [{"id", "timestamp", "changedFields": [...], "fields": {...}}]}``: one
    entry per changed employee; each entry gives at most one state change and one email change."""
    body = _object(document, "the body")
    employees = body.get("employees")
    if not isinstance(employees, list) or not employees:
        raise invalid("a BambooHR delivery carries a non-empty employees list")
    events: list[Event] = []
    for n, entry in enumerate(employees):
        events.extend(_bamboo_employee(_object(entry, f"employees[{n}]"), f"employees[{n}]"))
    return Delivery(tuple(events))


def _bamboo_employee(entry: dict[str, Any], where: str) -> list[Event]:
    employee_id = _text(entry.get("id"), f"{where}.id")
    occurred_at = _moment(entry.get("timestamp"), f"{where}.timestamp")
    changed = entry.get("changedFields") or []
    if not isinstance(changed, list) or not all(isinstance(f, str) for f in changed):
        raise invalid(f"{where}.changedFields must be a list of field names")
    fields = _object(entry.get("fields", {}), f"{where}.fields")
    email = fields.get(BAMBOO_EMAIL)
    # The work email names the user, unless this very change is to the email.
    known_email = None if BAMBOO_EMAIL in changed else _text(email, BAMBOO_EMAIL, required=False, max_length=320)
    subject = Subject(employee_id=employee_id, email=known_email)
    events = []
    state = _bamboo_state(changed, fields)
    if state:
        events.append(Event(state, occurred_at, subject))
    if BAMBOO_EMAIL in changed:
        events.append(Event("employee.email_changed", occurred_at, subject,
                            {"email": _text(email, BAMBOO_EMAIL, max_length=320)}))
    return events


def _bamboo_state(changed: list[str], fields: dict[str, Any]) -> str | None:
    """``Status`` (Active / Inactive) and ``Employment Status`` (Terminated, a leave, ...) into one
    state event; a termination outranks a leave, which outranks a return."""
    found = set()
    if "Status" in changed:
        status = str(fields.get("Status", "")).strip().lower()
        found.add({"inactive": "employee.terminated", "active": "employee.returned"}.get(status))
    if "Employment Status" in changed:
        employment = str(fields.get("Employment Status", "")).strip().lower()
        if employment == "terminated":
            found.add("employee.terminated")
        elif "leave" in employment:
            found.add("employee.leave_started")
    for state in ("employee.terminated", "employee.leave_started", "employee.returned"):
        if state in found:
            return state
    return None


# --- Personio ---------------------------------------------------------------------------------

PERSONIO_STATES = {
    "employment.terminated": "employee.terminated",
    "person.deleted": "employee.terminated",
    "employment.started": "employee.returned",
}
# Events Personio sends that change nothing here: accepted, and recorded as having no event.
PERSONIO_IGNORED = frozenset({"person.created", "employment.created", "employment.updated", "employment.deleted"})


def personio(document: Any) -> Delivery:
    """``{"company_id", "event_name", "occurred_at", "payload": {...}, "meta": {...}}``."""
    body = _object(document, "the body")
    _text(body.get("company_id"), "company_id")
    name = _text(body.get("event_name"), "event_name") or ""
    occurred_at = _moment(body.get("occurred_at"), "occurred_at")
    payload = _object(body.get("payload"), "payload")
    meta = _object(body.get("meta") or {}, "meta")
    event_id = _text(meta.get("event_id"), "meta.event_id", required=False)
    if name in PERSONIO_IGNORED or (name == "person.updated" and "email" not in payload):
        return Delivery((), event_id)
    person_id = _personio_person(payload)
    email = _text(payload.get("email"), "payload.email", required=False, max_length=320)
    if name == "person.updated":
        event = Event("employee.email_changed", occurred_at, Subject(employee_id=person_id), {"email": email})
    elif name in PERSONIO_STATES:
        event = Event(PERSONIO_STATES[name], occurred_at, Subject(employee_id=person_id, email=email))
    else:
        raise PayloadError(422, "unknown_event_type", f"{name!r} is not a Personio event adminlink acts on")
    return Delivery((event,), event_id)


def _personio_person(payload: dict[str, Any]) -> str | None:
    person = payload.get("person")
    if isinstance(person, dict):
        return _text(person.get("id"), "payload.person.id")
    return _text(payload.get("person_id", payload.get("id")), "payload.person_id")


ADAPTERS: dict[str, Callable[[Any], Delivery]] = {"generic": generic, "bamboohr": bamboohr, "personio": personio}
