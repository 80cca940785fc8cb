"""Directory Insights query API, compatible with JumpCloud's (``x-api-key``, one organization):
``POST /insights/directory/v1/events``, ``/events/count`` and ``/events/distinct``."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from service import insights_query, policy
from service.domain.commands import Actor
from service.domain.model import now
from service.http import inputs
from service.http.context import actor_of, services_of
from service.http.errors import ApiError
from service.policy import Action

routes = web.RouteTableDef()
BASE = "/insights/directory/v1/events"


async def parsed(request: web.Request) -> tuple[Actor, insights_query.EventQuery, dict[str, Any]]:
    actor = actor_of(request)
    policy.authorize(Action.READ_INSIGHTS, actor.role)
    # JumpCloud's managed service providers name the organization in x-org-id; here a key
    # belongs to one organization, and naming another is refused rather than ignored.
    org_header = request.headers.get("x-org-id")
    if org_header and org_header != actor.organization_id:
        raise ApiError(403, "organization_mismatch", "this API key belongs to another organization")
    body = await inputs.json_body(request)
    return actor, insights_query.parse(actor.organization_id, body, now()), body


@routes.post(BASE)
async def events(request: web.Request) -> web.Response:
    _, query, _ = await parsed(request)
    page = await services_of(request).insights.page(query)
    headers = {
        "X-Result-Count": str(len(page.bodies)),
        "X-Limit": str(query.limit),
        "X-Sort": query.sort,
        # Always present, as JumpCloud does; an empty page repeats where the caller stood.
        "X-Search_after": page.search_after or _echo(query),
    }
    text = "[" + ",".join(page.bodies) + "]"
    return web.Response(text=text, content_type="application/json", headers=headers)


def _echo(query: insights_query.EventQuery) -> str:
    if query.search_after is None:
        return "[]"
    moment, event_id = query.search_after
    return f"[{insights_query.to_epoch_ms(moment)}, {json.dumps(event_id)}]"


@routes.post(BASE + "/count")
async def count(request: web.Request) -> web.Response:
    _, query, _ = await parsed(request)
    return web.json_response({"count": await services_of(request).insights.count(query)})


@routes.post(BASE + "/distinct")
async def distinct(request: web.Request) -> web.Response:
    _, query, body = await parsed(request)
    field = insights_query.distinct_field(body.get("field"))
    return web.json_response(await services_of(request).insights.distinct(query, field))
