"""The admin portal's Directory Insights page: recent events of the organization, filtered by
type and by user (an email or id, as initiator or resource), each with its JSON. It builds a
query of the Directory Insights API (``service.insights_query``) and shows its answer."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

from aiohttp import web

from service import insights_query, policy
from service.domain.model import now
from service.http.context import services_of
from service.policy import Action
from service.web.admin_portal import Console, console_page, layout
from service.web.common import render

routes = web.RouteTableDef()
WINDOW_DAYS = 30
SHOWN = 100


def search_term(event_type: str, user: str) -> dict[str, Any] | None:
    terms: list[dict[str, Any]] = []
    if event_type:
        terms.append({"event_type": event_type})
    if user:
        terms.append({"or": [{"resource.email": user}, {"resource.id": user}, {"initiated_by.email": user},
                             {"initiated_by.id": user}]})
    return {"and": terms} if terms else None


@routes.get("/admin/insights")
@console_page
async def insights(request: web.Request, console: Console) -> web.StreamResponse:
    policy.authorize(Action.READ_INSIGHTS, console.actor.role)
    event_type = request.query.get("event_type", "").strip()[:100]
    user = request.query.get("user", "").strip()[:320]
    at = now()
    body: dict[str, Any] = {"service": ["all"], "start_time": (at - timedelta(days=WINDOW_DAYS)).isoformat(),
                            "sort": "DESC", "limit": SHOWN}
    term = search_term(event_type, user)
    if term:
        body["search_term"] = term
    org = console.actor.organization_id
    query = insights_query.parse(org, body, at)
    all_types = insights_query.parse(org, {key: body[key] for key in ("service", "start_time")}, at)
    store = services_of(request).insights
    page = await store.page(query)
    types = await store.distinct(all_types, insights_query.distinct_field("event_type"))
    events = [json.loads(text) for text in page.bodies]
    shown = [{"event": e, "json": json.dumps(e, indent=2, sort_keys=True)} for e in events]
    return render(request, "admin/insights.html", layout(
        console, "Directory Insights", events=shown, event_types=[b["key"] for b in types["buckets"]],
        event_type=event_type, user=user, window=WINDOW_DAYS, limit=SHOWN))
