"""The SCIM endpoints' shared plumbing: bearer-token authentication, request bodies, ETags, and
turning every refusal into a SCIM error body."""

from __future__ import annotations

import functools
import hmac
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from pydantic import ValidationError
from scim2_models import SCIMException

from service.adapters.crypto import token_hash
from service.adapters.scim_directory import SortRefused
from service.adapters.scim_filters import FilterRefused
from service.domain.commands import Actor, Command
from service.domain.errors import DomainError
from service.domain.text import unstorable_text
from service.http.context import services_of
from service.http.inputs import UNSTORABLE, strict_json
from service.logging import log_error, route_of
from service.provisioning import VersionMismatch
from webhooks.scim import errors
from webhooks.scim.errors import ScimError
from webhooks.scim.schema import POLICY

log = logging.getLogger(__name__)

BASE = "/scim/v2"
ID_RE = re.compile(r"^[0-9a-f]{32}$")
MAX_BODY = 1 << 20


@dataclass(frozen=True)
class Caller:
    """The SCIM integration a request comes from, acting with its admin role and name."""

    actor: Actor
    delete_mode: str


def unauthorized(detail: str) -> ScimError:
    return ScimError(401, detail, headers={"WWW-Authenticate": 'Bearer realm="adminlink SCIM"'})


async def authenticate(request: web.Request) -> Caller:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise unauthorized("an Authorization: Bearer token of a SCIM integration is required")
    digest = token_hash(token)
    row = await services_of(request).scim_integration(digest)
    if row is None or not hmac.compare_digest(row.token_hash, digest):
        raise unauthorized("the bearer token is unknown, rotated or deleted")
    actor = Actor(
        organization_id=row.organization_id, id=row.id, type="integration", role=row.role, source="scim",
        name=row.name, client_ip=request.remote, useragent=request.headers.get("User-Agent"),
        auth_method="bearer_token",
    )
    return Caller(actor, row.delete_mode or "suspend")


ScimHandler = Callable[[web.Request, Caller], Awaitable[web.StreamResponse]]


def endpoint(handler: ScimHandler) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """Authenticates the integration, runs the handler under the SCIM policy, and answers every
    refusal with a SCIM error body: never a bare 500."""

    @functools.wraps(handler)
    async def run(request: web.Request) -> web.StreamResponse:
        try:
            caller = await authenticate(request)
            with POLICY:
                return await handler(request, caller)
        except ScimError as error:
            return errors.from_scim_error(error)
        except DomainError as error:
            return errors.from_domain(error)
        except FilterRefused as refusal:
            return errors.error_response(400, refusal.detail, "invalidFilter")
        except SortRefused as refusal:
            return errors.error_response(400, refusal.detail, "invalidValue")
        except SCIMException as exc:
            return errors.from_scim_exception(exc)
        except ValidationError as exc:
            return errors.from_validation_error(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return errors.error_response(exc.status, exc.reason)
        except Exception as exc:
            log_error(log, exc, "unhandled error on SCIM %s %s", request.method, route_of(request))
            return errors.error_response(500, "internal error")

    return run


def base_url(request: web.Request) -> str:
    return f"{request.scheme}://{request.host}{BASE}"


def resource_id(request: web.Request) -> str:
    """Ids are adminlink's own: anything else names no resource."""
    value = request.match_info["id"]
    if not ID_RE.match(value):
        raise ScimError(404, "no such resource")
    return value


async def json_body(request: web.Request) -> dict[str, Any]:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ScimError(413, "the request body is larger than 1 MiB")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise ScimError(413, "the request body is larger than 1 MiB") from exc
    try:
        data = strict_json(raw) if raw else None
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ScimError(400, "the request body is not valid JSON", "invalidSyntax") from exc
    if not isinstance(data, dict):
        raise ScimError(400, "the request body must be a JSON object", "invalidSyntax")
    if unstorable_text(data):
        raise ScimError(400, UNSTORABLE, "invalidValue")
    return data


def check_if_match(request: web.Request, current_version: str) -> str | None:
    """RFC 7644 §3.14: a write with If-Match applies only to the version it names (412 otherwise).
    Returns the version the write must still find under its lock, or None without If-Match."""
    header = request.headers.get("If-Match")
    if header is None:
        return None
    if header.strip() == "*":
        return current_version
    given = {tag.strip() for tag in header.split(",")}
    weak = {tag if tag.startswith("W/") else f"W/{tag}" for tag in given}
    if current_version not in weak:
        raise ScimError(412, "the resource changed: its version is not the one given in If-Match")
    return current_version


def not_modified(request: web.Request, current_version: str) -> bool:
    header = request.headers.get("If-None-Match")
    if header is None:
        return False
    tags = {t.strip() if t.strip().startswith("W/") else f"W/{t.strip()}" for t in header.split(",")}
    return header.strip() == "*" or current_version in tags


PATCH_ATTEMPTS = 3


async def apply_patch(request: web.Request, load: Callable[[], Awaitable[Any]],
                      replacement: Callable[[Any], Command]) -> None:
    """Applies a PATCH as a full replacement of the version it was computed from. When another
    change lands in between, the PATCH is computed again on the new version; a client that pinned
    the version with If-Match gets 412 instead."""
    for attempt in range(PATCH_ATTEMPTS):
        current = await load()
        pinned = check_if_match(request, current.version)
        try:
            await services_of(request).bus.handle(replacement(current))
            return
        except VersionMismatch:
            if pinned is not None or attempt == PATCH_ATTEMPTS - 1:
                raise
