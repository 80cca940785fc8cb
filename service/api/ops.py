"""Ops: the job-queue API (``x-api-key``), the dashboard at ``/ops/`` (admin portal session) and
Prometheus ``/metrics`` (an ops API key or the scrape token)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from markupsafe import Markup

from service import metrics, policy
from service.adapters.arq_jobs import arq_state
from service.adapters.crypto import constant_time_equal
from service.api import ops_pages as pages
from service.api.api_keys import actor_for_api_key
from service.api.auth import current_session
from service.bootstrap import Services
from service.domain.commands import Actor
from service.domain.errors import DomainError
from service.domain.jobs import ABORTABLE, RETRYABLE, JobStatus
from service.domain.model import Admin, now
from service.http import inputs
from service.http.context import actor_of, services_of
from service.http.errors import ApiError, unauthorized
from service.ops import actions as ops_actions
from service.ops import views as ops
from service.policy import Action
from service.views import iso
from service.web.common import CsrfRefused, admin_sign_in_first, check_csrf, csrf_token, render

routes = web.RouteTableDef()


# --- JSON API ----------------------------------------------------------------------------------


def job_query(request: web.Request) -> ops.JobQuery:
    return ops.JobQuery(
        status=request.query.get("status") or None,
        function=request.query.get("function") or None,
        since=ops.parse_since(request.query.get("since")),
        limit=inputs.query_int(request, "limit", 50, minimum=1, maximum=ops.MAX_PAGE),
        cursor=request.query.get("cursor") or None,
    )


@routes.get("/api/v1/ops/queues")
async def queues(request: web.Request) -> web.Response:
    actor = actor_of(request)
    policy.authorize(Action.READ_JOBS, actor.role)
    at = now()
    async with services_of(request).uow(actor) as uow:
        stats = await ops.queue_stats(uow.jobs, actor.organization_id, at)
    return web.json_response({"generated": iso(at), "queues": stats})


@routes.get("/api/v1/ops/jobs")
async def list_jobs(request: web.Request) -> web.Response:
    actor = actor_of(request)
    policy.authorize(Action.READ_JOBS, actor.role)
    async with services_of(request).uow(actor) as uow:
        rows, next_cursor = await ops.list_jobs(uow.jobs, actor.organization_id, job_query(request))
    return web.json_response({"results": [ops.job_summary(r) for r in rows], "next_cursor": next_cursor})


async def job_json(services: Services, actor: Actor, job_id: str) -> dict[str, Any]:
    async with services.uow(actor) as uow:
        row = await ops.load_job(uow.jobs, actor.organization_id, job_id)
    body = ops.job_detail(row)
    body["arq"] = await arq_state(services.redis, services.settings.queue_name, row.id)
    return body


@routes.get("/api/v1/ops/jobs/{job_id}")
async def get_job(request: web.Request) -> web.Response:
    actor = actor_of(request)
    policy.authorize(Action.READ_JOBS, actor.role)
    return web.json_response(await job_json(services_of(request), actor, request.match_info["job_id"]))


@routes.post("/api/v1/ops/jobs/{job_id}/retry")
async def retry_job(request: web.Request) -> web.Response:
    services, actor = services_of(request), actor_of(request)
    done = await ops_actions.retry_job(services, actor, request.match_info["job_id"])
    job = await job_json(services, actor, done["job_id"])
    return web.json_response({"job": job, "enqueued": done["enqueued"]})


@routes.post("/api/v1/ops/jobs/{job_id}/abort")
async def abort_job(request: web.Request) -> web.Response:
    services, actor = services_of(request), actor_of(request)
    done = await ops_actions.abort_job(services, actor, request.match_info["job_id"])
    job = await job_json(services, actor, done["job_id"])
    return web.json_response({"job": job, "was": done["was"], "arq": done["arq"]})


# --- Prometheus --------------------------------------------------------------------------------


async def authorize_scrape(request: web.Request, services: Services) -> None:
    header = request.headers.get("Authorization", "")
    token = services.settings.metrics_token
    if header.lower().startswith("bearer ") and token:
        if constant_time_equal(header[7:].strip(), token):
            return
        raise unauthorized("the scrape token is not the configured one")
    key = request.headers.get("x-api-key", "")
    if not key:
        raise unauthorized("an ops API key (x-api-key) or the scrape bearer token is required")
    actor = await actor_for_api_key(services, key, request)
    policy.authorize(Action.READ_JOBS, actor.role)


@routes.get("/metrics")
async def metrics_endpoint(request: web.Request) -> web.Response:
    services = services_of(request)
    await authorize_scrape(request, services)
    return web.Response(body=await metrics.render(services), headers={"Content-Type": metrics.CONTENT_TYPE})


# --- dashboard ---------------------------------------------------------------------------------


def html(request: web.Request, shown: pages.Page, email: str | None, status: int = 200) -> web.Response:
    """A dashboard page in the portals' layout (the admin portal's header, sign-out, stylesheet)."""
    return render(request, "ops/page.html", {"layout": "ops", "title": shown.title, "body": Markup(shown.body),  # noqa: S704
                                             "who": email, "show_ops": True}, status)


class DashboardRefusal(Exception):
    def __init__(self, response: web.Response) -> None:
        self.response = response


async def dashboard_actor(request: web.Request) -> tuple[Actor, str]:
    """The signed-in admin (admin portal session) allowed to see queues, and the page's CSRF
    token. Not signed in: the admin portal's sign-in, which comes back here."""
    try:
        _, session, identity = await current_session(request)
    except ApiError as refusal:
        raise admin_sign_in_first(request) from refusal
    if session.kind != "admin" or session.portal != "admin_portal" or not isinstance(identity, Admin):
        raise admin_sign_in_first(request)
    decision = policy.decide(Action.READ_JOBS, identity.role, False)
    if not decision.allowed:
        text = f"The ops dashboard needs the {decision.required_role.value} role or higher."
        raise DashboardRefusal(html(request, pages.message("Not allowed", text), identity.email, 403))
    actor = Actor(
        organization_id=identity.organization_id, id=identity.id, type="admin", role=identity.role,
        email=identity.email, linked_user_id=identity.linked_user_id, source="admin_portal",
        client_ip=request.remote, useragent=request.headers.get("User-Agent"), auth_method="session",
    )
    return actor, csrf_token(request)


def refusals(handler: Any) -> Any:
    async def guarded(request: web.Request) -> web.StreamResponse:
        try:
            response: web.StreamResponse = await handler(request)
            return response
        except DashboardRefusal as refusal:
            return refusal.response
    guarded.__name__ = handler.__name__
    return guarded


@routes.get("/ops")
async def dashboard_root(request: web.Request) -> web.Response:
    raise web.HTTPFound("/ops/")


@routes.get("/ops/")
@refusals
async def dashboard(request: web.Request) -> web.Response:
    actor, _ = await dashboard_actor(request)
    org = actor.organization_id
    async with services_of(request).uow(actor) as uow:
        stats = await ops.queue_stats(uow.jobs, org, now())
        recent, _ = await ops.list_jobs(uow.jobs, org, ops.JobQuery(limit=20))
        failed, _ = await ops.list_jobs(uow.jobs, org, ops.JobQuery(status=JobStatus.FAILED, limit=20))
        dead, _ = await ops.list_jobs(uow.jobs, org, ops.JobQuery(status=JobStatus.DEAD, limit=20))
    summaries = [[ops.job_summary(r) for r in rows] for rows in (recent, failed, dead)]
    return html(request, pages.overview(stats, *summaries), actor.email)


@routes.get("/ops/jobs")
@refusals
async def dashboard_jobs(request: web.Request) -> web.Response:
    actor, _ = await dashboard_actor(request)
    filters = {k: request.query.get(k, "") for k in ("status", "function")}
    try:
        query = job_query(request)
        async with services_of(request).uow(actor) as uow:
            rows, next_cursor = await ops.list_jobs(uow.jobs, actor.organization_id, query)
    except DomainError as error:
        return html(request, pages.message("Bad filter", error.message), actor.email, 400)
    shown = pages.job_list([ops.job_summary(r) for r in rows], filters, next_cursor, ops.STATUSES)
    return html(request, shown, actor.email)


async def job_page(request: web.Request, actor: Actor, csrf: str, *, flash: str | None = None,
                   error: str | None = None, status: int = 200) -> web.Response:
    try:
        async with services_of(request).uow(actor) as uow:
            row = await ops.load_job(uow.jobs, actor.organization_id, request.match_info["job_id"])
    except DomainError as missing:
        return html(request, pages.message("No such job", missing.message), actor.email, 404)
    job = ops.job_detail(row)
    allowed = policy.decide(Action.OPERATE_JOBS, actor.role, False).allowed
    shown = pages.job_page(job, csrf, allowed and row.status in RETRYABLE,
                           allowed and row.status in ABORTABLE, flash=flash, error=error)
    return html(request, shown, actor.email, status)


DONE = {"retry": "Retry requested: the job is back in its queue.", "abort": "The job was aborted."}


@routes.get("/ops/jobs/{job_id}")
@refusals
async def dashboard_job(request: web.Request) -> web.Response:
    actor, csrf = await dashboard_actor(request)
    return await job_page(request, actor, csrf, flash=DONE.get(request.query.get("done", "")))


async def dashboard_action(request: web.Request, action: str) -> web.Response:
    actor, csrf = await dashboard_actor(request)
    try:
        await check_csrf(request)
    except ApiError as refusal:  # a form body that is not UTF-8
        return html(request, pages.message("Bad request", f"{refusal.message} ({refusal.code})"), actor.email, 400)
    except CsrfRefused:
        return html(request, pages.message("Refused", "The form was stale or not sent from this dashboard; reload "
                                           "the page and try again."), actor.email, 403)
    services, job_id = services_of(request), request.match_info["job_id"]
    try:
        await (ops_actions.retry_job if action == "retry" else ops_actions.abort_job)(services, actor, job_id)
    except DomainError as refusal:
        return await job_page(request, actor, csrf, error=refusal.message, status=409)
    raise web.HTTPSeeOther(f"/ops/jobs/{job_id}?done={action}")


@routes.post("/ops/jobs/{job_id}/retry")
@refusals
async def dashboard_retry(request: web.Request) -> web.Response:
    return await dashboard_action(request, "retry")


@routes.post("/ops/jobs/{job_id}/abort")
@refusals
async def dashboard_abort(request: web.Request) -> web.Response:
    return await dashboard_action(request, "abort")
