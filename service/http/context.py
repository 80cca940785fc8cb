"""What a request handler can reach: the wired services and the authenticated actor."""

from __future__ import annotations

from aiohttp import web

from service.bootstrap import Services
from service.domain.commands import Actor

SERVICES = web.AppKey("services", Services)
ACTOR = web.RequestKey("actor", Actor)


def services_of(request: web.Request) -> Services:
    return request.app[SERVICES]


def actor_of(request: web.Request) -> Actor:
    actor: Actor = request[ACTOR]
    return actor
