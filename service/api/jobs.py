"""``GET /api/v1/jobs/{id}``: what became of a queued job (the ``status_url`` a webhook answers).

Statuses: queued, in_progress, complete, stale, denied, failed (tried again later), dead.
"""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from service import policy, views
from service.domain.errors import NotFound
from service.http.context import actor_of, services_of
from service.policy import Action
from service.views import iso

routes = web.RouteTableDef()


@routes.get("/api/v1/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    actor = actor_of(request)
    policy.authorize(Action.READ_JOB_STATUS, actor.role)
    row = await services_of(request).jobs.get_in(actor.organization_id, request.match_info["job_id"][:32])
    if row is None:
        raise NotFound("job_not_found", "no such job")
    return web.json_response(job_view(row))


def job_view(row: Any) -> dict[str, Any]:
    return {
        **views.job(row),
        "retry_at": iso(row.defer_until) if row.status == "failed" else None,
        "result": row.result,
        "error": error_summary(row.error),
    }


# "module.Type: message", the line a traceback ends its exception with; a driver's error may add
# lines after it (its SQL, a link), which are not the summary.
EXCEPTION_LINE = re.compile(r"^(?:[A-Za-z_]\w*\.)*(?P<summary>[A-Za-z_]\w*: .*)$")


def error_summary(error: str | None) -> str | None:
    """The exception's own line, as ``Type: message``: a stored traceback stays with ops."""
    if not error:
        return None
    lines = [line.strip() for line in error.strip().splitlines() if line.strip()]
    found = [match["summary"] for line in lines if (match := EXCEPTION_LINE.match(line))]
    return found[-1] if found else (lines[-1] if lines else None)
