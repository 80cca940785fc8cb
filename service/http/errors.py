"""The one place that turns refusals into HTTP: ``{"error": {"code", "message"}}``."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service.domain.errors import DomainError

STATUS_BY_KIND = {"invalid": 400, "forbidden": 403, "not_found": 404, "conflict": 409, "unauthorized": 401}


class ApiError(DomainError):
    """A refusal raised by the HTTP layer itself (authentication, malformed input)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code, message)
        self.status = status


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, **extra}}


def status_for(error: DomainError) -> int:
    if isinstance(error, ApiError):
        return error.status
    return STATUS_BY_KIND.get(error.kind, 400)


def to_response(error: DomainError) -> web.Response:
    extra: dict[str, Any] = {}
    required = getattr(error, "required_role", None)
    if required:
        extra["required_role"] = required
    return web.json_response(error_body(error.code, error.message, **extra), status=status_for(error))


def unauthorized(message: str = "a valid x-api-key header is required") -> ApiError:
    return ApiError(401, "unauthorized", message)


def bad_request(code: str, message: str) -> ApiError:
    return ApiError(400, code, message)
