"""The aiohttp application: middlewares for errors, API-key authentication and idempotency,
and the route tables of each part of the API."""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.exc import IntegrityError

from service.adapters import orm
from service.adapters.crypto import token_hash
from service.api import auth, health, insights, jobs, management, openapi, ops, signin
from service.api.context import ACTOR, SERVICES, actor_of, services_of
from service.api.errors import ApiError, error_body, status_for, to_response, unauthorized
from service.bootstrap import Services
from service.domain.commands import Actor
from service.domain.errors import DomainError
from service.domain.model import Admin, aware, now
from webhooks import receivers, scim

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except DomainError as error:
        return to_response(error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status, "http_error")
        return web.json_response(error_body(code, exc.reason), status=exc.status, headers={
            k: v for k, v in exc.headers.items() if k.lower() == "allow"
        })
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return web.json_response(error_body("internal_error", "internal error"), status=500)


def _client(request: web.Request) -> tuple[str | None, str | None]:
    return request.remote, request.headers.get("User-Agent")


async def actor_for_api_key(services: Services, key: str, request: web.Request) -> Actor:
    async with services.session_factory() as session:
        keys = orm.api_keys
        row = (await session.execute(sa.select(keys).where(keys.c.key_hash == token_hash(key)))).one_or_none()
        if row is None or (row.expires_at and aware(row.expires_at) <= now()):
            raise unauthorized("the API key is unknown or expired")
        admin = (
            await session.scalars(
                sa.select(Admin).where(orm.admins.c.id == row.admin_id,
                                       orm.admins.c.organization_id == row.organization_id)
            )
        ).one_or_none()
        if admin is None or not admin.api_access:
            raise unauthorized("the API key's admin has no API access")
        if admin.linked_user_id:
            state = (await session.execute(
                sa.select(orm.users.c.state, orm.users.c.account_locked).where(
                    orm.users.c.id == admin.linked_user_id)
            )).one()
            if state.state != "ACTIVATED" or state.account_locked:
                raise unauthorized("the API key's admin belongs to a suspended or locked user")
        await session.execute(sa.update(keys).where(keys.c.id == row.id).values(last_used_at=now()))
        await session.commit()
    client_ip, useragent = _client(request)
    return Actor(
        organization_id=admin.organization_id, id=admin.id, type="admin", role=admin.role, email=admin.email,
        linked_user_id=admin.linked_user_id, client_ip=client_ip, useragent=useragent,
    )


API_KEY_PATHS = ("/api/", "/insights/")


@web.middleware
async def api_key_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(API_KEY_PATHS):
        key = request.headers.get("x-api-key", "")
        if not key:
            raise unauthorized()
        request[ACTOR] = await actor_for_api_key(services_of(request), key, request)
    return await handler(request)


MUTATING = {"POST", "PUT", "PATCH", "DELETE"}


@web.middleware
async def idempotency_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """A retried mutating request with the same ``Idempotency-Key`` gets the first answer and
    is applied once. A key reused for a different request is refused."""
    key = request.headers.get("Idempotency-Key")
    if request.method not in MUTATING or not key or ACTOR not in request:
        return await handler(request)
    if len(key) > 200:
        raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key is longer than 200 characters")
    services, actor = services_of(request), actor_of(request)
    body = await request.read()
    fingerprint = hashlib.sha256(f"{request.method} {request.path_qs} {actor.id}\n".encode() + body).hexdigest()
    table = orm.idempotency_keys
    where = (table.c.organization_id == actor.organization_id, table.c.key == key)
    async with services.session_factory() as session:
        try:
            async with session.begin():
                await session.execute(table.insert().values(
                    organization_id=actor.organization_id, key=key, request_fingerprint=fingerprint,
                    created_at=now()))
        except IntegrityError:
            seen = (await session.execute(sa.select(table).where(*where))).one()
            if seen.request_fingerprint != fingerprint:
                raise ApiError(422, "idempotency_key_reused", "this Idempotency-Key was used for another request")
            if seen.status_code is None:
                raise ApiError(409, "idempotency_in_progress", "a request with this Idempotency-Key is running")
            return web.json_response(seen.response, status=seen.status_code,
                                     headers={"Idempotent-Replayed": "true"})
    try:
        response = await handler(request)
    except DomainError as error:
        response = to_response(error)
        if status_for(error) >= 500:
            raise
    async with services.session_factory() as session, session.begin():
        if isinstance(response, web.Response) and response.status < 500:
            payload = _json_of(response)
            await session.execute(sa.update(table).where(*where).values(status_code=response.status,
                                                                          response=payload))
        else:  # nothing to replay: let a retry run again
            await session.execute(sa.delete(table).where(*where))
    return response


def _json_of(response: web.Response) -> object:
    if response.body is None or response.content_type != "application/json":
        return None
    assert isinstance(response.body, bytes)
    return json.loads(response.body) if response.body else None


def create_app(services: Services) -> web.Application:
    app = web.Application(
        middlewares=[errors_middleware, api_key_middleware, idempotency_middleware],
        client_max_size=1 << 20,
    )
    app[SERVICES] = services
    for part in (health, openapi, auth, signin, management, jobs, ops, insights, scim, receivers):
        app.add_routes(part.routes)
    return app
