"""JumpCloud Directory Insights queries: the request body, checked and parsed into an ``EventQuery``
that ``service.adapters.insights_store`` runs in the database.

The request body is JumpCloud's: ``service`` (list), ``start_time``, ``end_time``, ``search_term``,
``fields``, ``sort``, ``limit`` and ``search_after``. A ``search_term`` holds ``and`` / ``or`` /
``not`` conjunctions, nested at will; each takes either a list of term objects or one object. Every
``field: value`` pair inside a conjunction is combined with that conjunction's operator; a value
list matches any of its values; ``not`` matches events that match none of its terms. Fields are
event fields in dot notation (``initiated_by.administrator``, ``target_resource.type``).

A search term is parsed into a tree of ``Match`` and ``Conjunction``; the adapter runs it in the
database, scoped to one organization and a time range: the fields with a column of their own
(``COLUMN_FIELDS``: ``event_type``, ``service``, ``success``, ``initiated_by.administrator``,
``target_resource.type``, ``id``) use the indexes, the others read the JSON body. Paging is by
keyset on (timestamp, id), so pages never overlap or skip, even when events share a timestamp.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from service.domain.errors import InvalidRequest
from service.domain.model import as_utc

SERVICES = ("all", "directory", "sso", "radius", "systems", "ldap", "mdm", "password_manager", "software",
            "object_storage", "alerts", "access_management", "reports", "assets", "notifications",
            "saas_app_management")
DEFAULT_LIMIT = 1000
MAX_LIMIT = 10_000
MAX_TERMS = 50  # x MAX_VALUES stays under PostgreSQL's 32767 bind parameters
MAX_DEPTH = 8
MAX_VALUES = 500
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
PATH_SEGMENT = re.compile(r"^[A-Za-z0-9_@-]{1,64}$")
CONJUNCTIONS = ("and", "or", "not")
# Top-level fields a record may carry; a ``fields`` list naming none of them is refused.
KNOWN_FIELDS = frozenset({
    "id", "event_type", "service", "timestamp", "organization", "initiated_by", "resource", "target_resource",
    "changes", "client_ip", "useragent", "success", "auth_method", "mfa", "mfa_meta", "geoip", "provider",
    "association", "error_message", "message", "username", "auth_context", "job", "@version",
})


def invalid(code: str, message: str) -> InvalidRequest:
    return InvalidRequest(code, message)


# --- terms -------------------------------------------------------------------------------------

Scalar = str | int | float | bool | None


def parse_path(name: str) -> tuple[str, ...]:
    parts = tuple(name.split("."))
    if not name or len(parts) > 6 or not all(PATH_SEGMENT.match(p) for p in parts):
        raise invalid("invalid_search_term", f"{name[:80]!r} is not a field name (letters, digits, _ and dots)")
    return parts


def as_values(name: str, value: Any) -> list[Scalar]:
    values = value if isinstance(value, list) else [value]
    if not values or len(values) > MAX_VALUES:
        raise invalid("invalid_search_term", f"{name}: give one value or a list of 1 to {MAX_VALUES} values")
    for v in values:
        if isinstance(v, dict | list):
            raise invalid("invalid_search_term", f"{name}: values must be strings, numbers, booleans or null")
        if isinstance(v, str) and len(v) > 1000:
            raise invalid("invalid_search_term", f"{name}: values are at most 1000 characters")
        if isinstance(v, str) and "\x00" in v:
            raise invalid("invalid_search_term", f"{name}: values must not contain NUL characters")
    return values


def as_bool(name: str, value: Scalar) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise invalid("invalid_search_term", f"{name} is true or false")


def as_lower_string(name: str, value: Scalar) -> str:
    if not isinstance(value, str):
        raise invalid("invalid_search_term", f"{name} takes string values")
    return value.lower()


def each(name: str, values: list[Scalar], convert: Callable[[str, Scalar], Any]) -> list[Any]:
    """``values`` converted for a column, None (a missing field) kept as it is."""
    return [None if v is None else convert(name, v) for v in values]


@dataclass(frozen=True)
class Column:
    """A field with a column of its own (a name of ``COLUMN_FIELDS``): the indexes answer for it."""

    name: str


@dataclass(frozen=True)
class BodyPath:
    """A field read from the event's JSON body, by its path."""

    path: tuple[str, ...]


Field = Column | BodyPath


@dataclass(frozen=True)
class Match:
    """Events whose field has one of ``values`` (converted to the column's type for a column);
    None among them matches events lacking the field."""

    field: Field
    values: tuple[Any, ...]


@dataclass(frozen=True)
class Conjunction:
    """``and``: every term matches; ``or``: any does; ``not``: none does."""

    op: str
    terms: tuple[Condition, ...]


Condition = Match | Conjunction


def as_id(_name: str, value: Scalar) -> str:
    return str(value)


# The fields with a column of their own, and how their values are read.
COLUMN_FIELDS: dict[str, Callable[[str, Scalar], Any]] = {
    "event_type": as_lower_string, "service": as_lower_string, "id": as_id, "success": as_bool,
    "initiated_by.administrator": as_bool, "target_resource.type": as_lower_string,
}


def field_term(name: str, value: Any) -> Match:
    values = as_values(name, value)
    convert = COLUMN_FIELDS.get(name)
    if convert is not None:
        return Match(Column(name), tuple(each(name, values, convert)))
    if name in ("timestamp", "organization"):
        raise invalid("invalid_search_term", f"search on {name} with start_time / end_time and your API key")
    return Match(BodyPath(parse_path(name)), tuple(values))


@dataclass
class TermCounter:
    terms: int = 0


def conjunction(op: str, content: Any, depth: int, counter: TermCounter) -> Conjunction:
    if depth > MAX_DEPTH:
        raise invalid("invalid_search_term", f"search terms nest at most {MAX_DEPTH} deep")
    items = content if isinstance(content, list) else [content]
    if not items or not all(isinstance(i, dict) and i for i in items):
        raise invalid("invalid_search_term", f"'{op}' takes a term object or a list of term objects")
    terms: list[Condition] = []
    for item in items:
        for name, value in item.items():
            counter.terms += 1
            if counter.terms > MAX_TERMS:
                raise invalid("invalid_search_term", f"at most {MAX_TERMS} terms in one search")
            if name in CONJUNCTIONS:
                terms.append(conjunction(name, value, depth + 1, counter))
            else:
                terms.append(field_term(str(name), value))
    return Conjunction(op, tuple(terms))


def search_condition(search_term: Any) -> Conjunction | None:
    if search_term is None or search_term == {}:
        return None
    if not isinstance(search_term, dict) or not set(search_term) <= set(CONJUNCTIONS):
        raise invalid("invalid_search_term", "search_term is an object with 'and', 'or' and/or 'not'")
    counter = TermCounter()
    return Conjunction("and", tuple(conjunction(op, content, 1, counter) for op, content in search_term.items()))


# --- the query ---------------------------------------------------------------------------------


def parse_time(name: str, value: Any, required: bool) -> datetime | None:
    if value is None:
        if required:
            raise invalid("missing_field", f"{name} is required (RFC 3339, e.g. 2024-01-01T00:00:00Z)")
        return None
    if not isinstance(value, str):
        raise invalid("invalid_time", f"{name} must be an RFC 3339 date-time string")
    try:
        moment = datetime.fromisoformat(value.strip().replace("z", "Z").replace("Z", "+00:00"))
        return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except (ValueError, OverflowError) as exc:
        raise invalid("invalid_time", f"{name} must be an RFC 3339 date-time, e.g. 2024-01-01T00:00:00Z") from exc


def to_epoch_ms(moment: datetime) -> str:
    """A timestamp as epoch milliseconds, exact: microseconds become the fraction."""
    delta = as_utc(moment) - EPOCH
    micros = (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
    whole, fraction = divmod(micros, 1000)
    return str(whole) if fraction == 0 else f"{whole}.{fraction:03d}"


def from_epoch_ms(value: Any) -> datetime:
    try:
        micros = int(Decimal(str(value).strip()) * 1000)
    except (InvalidOperation, ValueError, OverflowError) as exc:
        raise invalid("invalid_search_after", "search_after starts with a timestamp in milliseconds") from exc
    if not 0 <= micros < 253_402_300_800_000_000:
        raise invalid("invalid_search_after", "search_after's timestamp is out of range")
    return EPOCH + timedelta(microseconds=micros)


def parse_search_after(value: Any) -> tuple[datetime, str] | None:
    if value is None or value == []:
        return None
    if isinstance(value, str):  # the header's text itself, pasted whole
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise invalid("invalid_search_after", "search_after is the X-Search_after header's list") from exc
    if not isinstance(value, list) or len(value) != 2 or isinstance(value[0], bool | dict | list):
        raise invalid("invalid_search_after", "search_after is the X-Search_after header's list: [time, id]")
    event_id = value[1]
    if not isinstance(event_id, str) or not 0 < len(event_id) <= 64 or "\x00" in event_id:
        raise invalid("invalid_search_after", "search_after's second item is an event id")
    return from_epoch_ms(value[0]), event_id


def parse_services(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(s, str) for s in value):
        raise invalid("invalid_service", f"service is a list of service names: {', '.join(SERVICES)}")
    services = tuple(dict.fromkeys(s.lower() for s in value))  # at most one of each: a bounded query
    unknown = [s for s in services if s not in SERVICES]
    if unknown:
        raise invalid("invalid_service", f"unknown service {unknown[0][:40]!r}; known: {', '.join(SERVICES)}")
    return services


def parse_limit(value: Any) -> int:
    if value is None:
        return DEFAULT_LIMIT
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_LIMIT:
        raise invalid("invalid_limit", f"limit is a whole number from 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})")
    return value


def parse_sort(value: Any) -> str:
    if value is None:
        return "ASC"
    if not isinstance(value, str) or value.upper() not in ("ASC", "DESC"):
        raise invalid("invalid_sort", "sort is ASC (the default) or DESC")
    return value.upper()


def parse_fields(value: Any) -> tuple[tuple[str, ...], ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not value or not all(isinstance(f, str) for f in value):
        raise invalid("invalid_fields", "fields is a non-empty list of field names")
    paths = tuple(parse_path(f) for f in value)
    if not any(p[0] in KNOWN_FIELDS for p in paths):
        raise invalid("invalid_fields", "fields names no known event field")
    return paths


@dataclass(frozen=True)
class EventQuery:
    organization_id: str
    start_time: datetime
    end_time: datetime | None = None
    services: tuple[str, ...] = ("all",)
    condition: Condition | None = None
    fields: tuple[tuple[str, ...], ...] | None = None
    sort: str = "ASC"
    limit: int = DEFAULT_LIMIT
    search_after: tuple[datetime, str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


ALLOWED_KEYS = frozenset({"service", "start_time", "end_time", "search_term", "fields", "sort", "limit",
                          "search_after", "field", "q", "exact_match", "skip"})


def parse(organization_id: str, body: dict[str, Any], at: datetime) -> EventQuery:
    unknown = set(body) - ALLOWED_KEYS
    if unknown:
        raise invalid("invalid_field", f"unknown query field {sorted(unknown)[0][:40]!r}")
    if body.get("q") or body.get("exact_match") or body.get("skip"):
        raise invalid("unsupported_field", "q, exact_match and skip are not supported; use search_term and "
                                           "search_after")
    if "service" not in body:
        raise invalid("missing_field", "service is required, e.g. [\"all\"] or [\"directory\"]")
    start = parse_time("start_time", body.get("start_time"), required=True)
    end = parse_time("end_time", body.get("end_time"), required=False)
    assert start is not None
    if start > at + timedelta(minutes=5):
        raise invalid("invalid_time", "start_time is in the future")
    if end is not None and end <= start:
        raise invalid("invalid_time", "end_time must come after start_time")
    return EventQuery(
        organization_id=organization_id, start_time=start, end_time=end,
        services=parse_services(body.get("service")), condition=search_condition(body.get("search_term")),
        fields=parse_fields(body.get("fields")), sort=parse_sort(body.get("sort")),
        limit=parse_limit(body.get("limit")), search_after=parse_search_after(body.get("search_after")),
    )


@dataclass
class Page:
    bodies: list[str]
    search_after: str | None  # the X-Search_after header: [epoch ms, "last event id"]
    last: tuple[datetime, str] | None  # the same key, for callers that page on their own


def project(body: dict[str, Any], paths: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    """Only the requested fields, nested as in the event."""
    out: dict[str, Any] = {}
    for path in paths:
        value: Any = body
        for part in path:
            value = value.get(part) if isinstance(value, dict) else None
            if value is None:
                break
        if value is None:
            continue
        target = out
        for part in path[:-1]:
            target = target.setdefault(part, {})
        target[path[-1]] = value
    return out


def distinct_field(name: Any) -> Field:
    """The field whose distinct values ``/events/distinct`` lists."""
    if not isinstance(name, str) or not name:
        raise invalid("missing_field", "field is required: the field whose distinct values to list")
    if name in COLUMN_FIELDS and name != "id":
        return Column(name)
    if name in ("id", "timestamp"):
        raise invalid("invalid_field", f"{name} has a distinct value per event; count events instead")
    return BodyPath(parse_path(name))
