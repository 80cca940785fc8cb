"""SCIM error responses (RFC 7644 §3.12): every refusal of the SCIM service is an Error body."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from scim2_models import Error, SCIMException

from service.domain.errors import DomainError
from service.http.errors import ApiError
from service.provisioning import VersionMismatch

CONTENT_TYPE = "application/scim+json"
# Refusals that are about a value another resource already holds.
UNIQUENESS_CODES = frozenset({"username_taken", "email_taken", "group_name_taken", "conflict"})
STATUS_BY_KIND = {"invalid": 400, "forbidden": 403, "not_found": 404, "conflict": 409}
ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"
# The scimType values of RFC 7644 §3.12 that a request's content can earn: all answered 400.
REQUEST_SCIM_TYPES = frozenset({"invalidFilter", "tooMany", "invalidSyntax", "invalidPath", "noTarget",
                                "invalidValue", "invalidVers", "mutability"})


class ScimError(Exception):
    """A refusal raised by the SCIM layer itself (authentication, malformed request)."""

    def __init__(self, status: int, detail: str, scim_type: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.scim_type = scim_type
        self.headers = headers or {}


def scim_json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=json.dumps(body, separators=(",", ":")), status=status,
                        content_type=CONTENT_TYPE, charset="utf-8", headers=headers)


def error_response(status: int, detail: str, scim_type: str | None = None,
                   headers: dict[str, str] | None = None) -> web.Response:
    """The Error body is written here, not by scim2-models: RFC 7644 §3.12's shape, with the
    status as a string, whatever a release of the package serialises."""
    body: dict[str, Any] = {"schemas": [ERROR_SCHEMA], "status": str(status)}
    if scim_type:
        body["scimType"] = scim_type
    body["detail"] = detail
    return scim_json(body, status, headers)


def request_refusal(scim_type: str | None, detail: str) -> web.Response:
    """A request refused while scim2-models parsed it. The status and scimType come from our
    table, never from the package: a release that classifies an error anew cannot change our
    answer beyond the words of its detail."""
    return error_response(400, detail, scim_type if scim_type in REQUEST_SCIM_TYPES else "invalidValue")


def from_scim_error(error: ScimError) -> web.Response:
    return error_response(error.status, error.detail, error.scim_type, error.headers)


def from_domain(error: DomainError) -> web.Response:
    """adminlink's refusals, with their stable code in the detail."""
    detail = f"{error.code}: {error.message}"
    if isinstance(error, VersionMismatch):
        return error_response(412, detail)
    if isinstance(error, ApiError):
        return error_response(error.status, detail)
    status = STATUS_BY_KIND.get(error.kind, 400)
    scim_type = None
    if status == 400:
        scim_type = "invalidValue"
    elif status == 409 and error.code in UNIQUENESS_CODES:
        scim_type = "uniqueness"
    return error_response(status, detail, scim_type)


def from_scim_exception(exc: SCIMException) -> web.Response:
    error = exc.to_error()
    return request_refusal(error.scim_type, error.detail or str(exc))


def from_validation_error(exc: ValidationError) -> web.Response:
    errors = Error.from_validation_errors(exc)
    first = errors[0] if errors else None
    return request_refusal(first.scim_type if first else None, (first.detail if first else None) or "invalid request")
