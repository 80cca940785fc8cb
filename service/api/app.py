"""The aiohttp application: middlewares for errors, API-key authentication and idempotency,
and the route tables of each part of the API."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

import sqlalchemy as sa
from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service.adapters import orm
from service.adapters.crypto import token_hash
from service.api import auth, health, insights, jobs, management, openapi, ops, signin
from service.api.context import ACTOR, SERVICES, services_of
from service.api.errors import error_body, to_response, unauthorized
from service.api.idempotency import idempotency_middleware
from service.bootstrap import Services
from service.domain.commands import Actor
from service.domain.errors import DomainError
from service.domain.model import Admin, as_utc, now
from service.logging import request_log_middleware
from service.metrics import metrics_middleware
from webhooks import receivers, scim

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

API_KEY_PATHS = ("/api/", "/insights/")
LAST_USED_RESOLUTION = timedelta(minutes=1)

# The database or Redis is down or a pooled connection died (PostgreSQL restarted: SQLAlchemy then
# replaces the pool's connections, so the next request gets a fresh one): nothing was done, and a
# client may try again. The engine does not ping a connection before every use; this is the price.
REDIS_OUTAGES = (RedisConnectionError, RedisTimeoutError)
OUTAGES = (sa.exc.DBAPIError, sa.exc.TimeoutError, OSError, *REDIS_OUTAGES)


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
    except OUTAGES as outage:
        if isinstance(outage, sa.exc.DBAPIError) and not _lost_connection(outage):
            log.exception("unhandled database error on %s %s", request.method, request.path)
            return web.json_response(error_body("internal_error", "internal error"), status=500)
        log.warning("%s %s: %s unavailable (%s)", request.method, request.path,
                    "Redis" if isinstance(outage, REDIS_OUTAGES) else "the database", type(outage).__name__)
        return web.json_response(error_body("temporarily_unavailable", "a backing service is unavailable; "
                                            "try again shortly"), status=503, headers={"Retry-After": "5"})
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return web.json_response(error_body("internal_error", "internal error"), status=500)


def _lost_connection(error: sa.exc.DBAPIError) -> bool:
    return error.connection_invalidated or isinstance(error, (sa.exc.OperationalError, sa.exc.InterfaceError))


def _client(request: web.Request) -> tuple[str | None, str | None]:
    return request.remote, request.headers.get("User-Agent")


async def actor_for_api_key(services: Services, key: str, request: web.Request) -> Actor:
    async with services.session_factory() as session:
        keys = orm.api_keys
        row = (await session.execute(sa.select(keys).where(keys.c.key_hash == token_hash(key)))).one_or_none()
        if row is None or (row.expires_at is not None and as_utc(row.expires_at) <= now()):
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
        if row.last_used_at is None or as_utc(row.last_used_at) < now() - LAST_USED_RESOLUTION:
            # At most one write a minute per key: a busy integration must not write on every request.
            await session.execute(sa.update(keys).where(keys.c.id == row.id).values(last_used_at=now()))
            await session.commit()
    client_ip, useragent = _client(request)
    return Actor(
        organization_id=admin.organization_id, id=admin.id, type="admin", role=admin.role, email=admin.email,
        linked_user_id=admin.linked_user_id, client_ip=client_ip, useragent=useragent,
    )


@web.middleware
async def api_key_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.path.startswith(API_KEY_PATHS):
        key = request.headers.get("x-api-key", "")
        if not key:
            raise unauthorized()
        request[ACTOR] = await actor_for_api_key(services_of(request), key, request)
    return await handler(request)


def create_app(services: Services) -> web.Application:
    app = web.Application(
        # Outermost first: correlation id and access log, then metrics, both seeing final statuses.
        middlewares=[request_log_middleware, metrics_middleware, errors_middleware, api_key_middleware,
                     idempotency_middleware],
        client_max_size=1 << 20,
    )
    app[SERVICES] = services
    receivers.setup(app, services)
    for part in (health, openapi, auth, signin, management, jobs, ops, insights, scim, receivers):
        app.add_routes(part.routes)
    return app
