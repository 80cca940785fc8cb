"""Reading request input: every malformed value is a 400 with a stable code, never a 500."""

from __future__ import annotations

import enum
import json
from typing import Any, TypeVar

from aiohttp import web

from service.domain.text import unstorable_text
from service.http.errors import bad_request

E = TypeVar("E", bound=enum.Enum)
MAX_BODY = 1 << 20


async def json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise bad_request("body_too_large", "request body is too large")
    raw = await request.read()
    if not raw:
        return {}
    try:
        data = strict_json(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise bad_request("invalid_json", "request body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise bad_request("invalid_json", "request body must be a JSON object")
    if unstorable_text(data):
        raise bad_request("invalid_json", UNSTORABLE)
    return data


UNSTORABLE = "strings must not contain NUL characters or unpaired surrogates"


def strict_json(raw: bytes) -> Any:
    """JSON as RFC 8259 has it: NaN and Infinity, which Python accepts, are refused (ValueError)."""
    return json.loads(raw, parse_constant=_not_a_number)


def _not_a_number(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def string(data: dict[str, Any], name: str, *, required: bool = False, max_length: int = 320) -> str | None:
    value = data.get(name)
    if value is None:
        if required:
            raise bad_request("missing_field", f"{name} is required")
        return None
    if not isinstance(value, str):
        raise bad_request("invalid_field", f"{name} must be a string")
    if len(value) > max_length:
        raise bad_request("invalid_field", f"{name} is longer than {max_length} characters")
    return value


def required_string(data: dict[str, Any], name: str, *, max_length: int = 320) -> str:
    value = string(data, name, required=True, max_length=max_length)
    assert value is not None
    return value


def boolean(data: dict[str, Any], name: str, default: bool | None = None) -> bool | None:
    value = data.get(name, default)
    if value is not None and not isinstance(value, bool):
        raise bad_request("invalid_field", f"{name} must be true or false")
    return value


def choice(data: dict[str, Any], name: str, enum_type: type[E], *, required: bool = False) -> E | None:
    value = string(data, name, required=required)
    if value is None:
        return None
    try:
        return enum_type(value)
    except ValueError as exc:
        allowed = ", ".join(str(m.value) for m in enum_type)
        raise bad_request("invalid_field", f"{name} must be one of: {allowed}") from exc


def query_int(request: web.Request, name: str, default: int, *, minimum: int = 0, maximum: int = 1000) -> int:
    raw = request.query.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError as exc:
        raise bad_request("invalid_query", f"{name} must be an integer") from exc
    if not minimum <= value <= maximum:
        raise bad_request("invalid_query", f"{name} must be between {minimum} and {maximum}")
    return value
