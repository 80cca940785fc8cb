"""Liveness and readiness."""

from __future__ import annotations

import asyncio

from aiohttp import web

from service.adapters import db
from service.http.context import services_of

routes = web.RouteTableDef()
CHECK_TIMEOUT = 2.0


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.Response:
    services = services_of(request)

    async def database() -> None:
        await db.check_connection(services.engine)

    async def redis() -> None:
        await services.redis.ping()

    checks = {"database": database, "redis": redis}
    failing = {}
    for name, check in checks.items():
        try:
            await asyncio.wait_for(check(), CHECK_TIMEOUT)
        except Exception as exc:  # any failure means "not ready"; the reason is reported
            failing[name] = type(exc).__name__
    if failing:
        return web.json_response({"status": "unavailable", "failing": failing}, status=503)
    return web.json_response({"status": "ready", "checks": dict.fromkeys(checks, "ok")})
