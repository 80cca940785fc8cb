"""The aiohttp application: middlewares for errors, API-key authentication and idempotency, and
the route tables of every HTTP entrypoint (the API, the portals' pages, the webhook receivers and
the SCIM server): the one module that brings them together."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from service import edge
from service.adapters import db
from service.api import auth, health, insights, jobs, management, openapi, ops, signin
from service.api.api_keys import actor_for_api_key
from service.api.idempotency import idempotency_middleware
from service.bootstrap import Services
from service.domain.errors import DomainError
from service.http.context import ACTOR, SERVICES, services_of
from service.http.errors import error_body, to_response, unauthorized
from service.logging import log_error, request_log_middleware, route_of
from service.metrics import metrics_middleware
from service.web import setup as setup_pages
from webhooks import receivers, scim

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

API_KEY_PATHS = ("/api/", "/insights/")
MAX_REQUEST_LINE = 64 * 1024

# The database or Redis is down or a pooled connection died (db.is_database_outage): nothing was
# done, and a client may try again. The engine does not ping a connection before every use; this is
# the price.
REDIS_OUTAGES = (RedisConnectionError, RedisTimeoutError)
OTHER_OUTAGES = (OSError, *REDIS_OUTAGES)


@web.middleware
async def errors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    refusal = edge.refusal_for(request)
    if refusal is not None:
        return edge.respond(request, refusal)
    try:
        return await handler(request)
    except DomainError as error:
        return to_response(error)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {404: "not_found", 405: "method_not_allowed", 413: "body_too_large"}.get(exc.status, "http_error")
        headers = {k: v for k, v in exc.headers.items() if k.lower() == "allow"}
        if isinstance(exc, web.HTTPMethodNotAllowed):
            headers["Allow"] = _allowed_methods(request, exc)
        return web.json_response(error_body(code, exc.reason), status=exc.status, headers=headers)
    except Exception as exc:
        if db.is_database_outage(exc) or isinstance(exc, OTHER_OUTAGES):
            log.warning("%s %s: %s unavailable (%s)", request.method, request.path,
                        "Redis" if isinstance(exc, REDIS_OUTAGES) else "the database", type(exc).__name__)
            return web.json_response(error_body("temporarily_unavailable", "a backing service is unavailable; "
                                                "try again shortly"), status=503, headers={"Retry-After": "5"})
        if db.is_database_error(exc):
            log_error(log, exc, "unhandled database error on %s %s", request.method, route_of(request))
        else:  # asyncpg's own errors (service/adapters/direct.py) come here
            log_error(log, exc, "unhandled error on %s %s", request.method, route_of(request))
        return web.json_response(error_body("internal_error", "internal error"), status=500)


def _allowed_methods(request: web.Request, exc: web.HTTPMethodNotAllowed) -> str:
    """aiohttp's Allow names the methods of every route whose pattern matches the path: for
    /api/v1/users/bulk-delete also those of /api/v1/users/{user_id}. A path served by a route of its
    own (no template) allows that route's methods only."""
    methods = {route.method for resource in request.app.router.resources()
               if isinstance(resource, web.PlainResource) and resource.canonical == request.path
               for route in resource if route.method != "*"}
    if not methods:
        return ",".join(sorted(exc.allowed_methods))
    return ",".join(sorted(methods | ({"HEAD"} if "GET" in methods else set())))


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
        # A SCIM filter may be 4000 characters, and each can take 12 bytes percent-encoded: the
        # request line must hold it (aiohttp's default is 8190 bytes).
        handler_args={"max_line_size": MAX_REQUEST_LINE},
    )
    app[SERVICES] = services
    receivers.setup(app, services)
    for part in (health, openapi, auth, signin, management, jobs, ops, insights, scim, receivers):
        app.add_routes(part.routes)
    setup_pages(app)  # the portals' pages, on the same handlers
    return app
