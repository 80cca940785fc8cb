"""The ops dashboard's page bodies, rendered on the server from plain strings inside the portals'
shared layout (``service/web``): no scripts, no build step. Every value that reaches a page goes
through ``html.escape`` (job arguments come from outside)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from html import escape
from typing import Any
from urllib.parse import urlencode


@dataclass(frozen=True)
class Page:
    """A dashboard page's title and body; the portals' shared layout (service/web) wraps it."""

    title: str
    body: str  # already escaped, value by value


def e(value: Any) -> str:
    return escape("" if value is None else str(value))


def page(title: str, body: str) -> Page:
    return Page(title, body)


NAV = ('<nav class="subnav" aria-label="Ops"><a href="/ops/">Queues</a> <a href="/ops/jobs">Jobs</a> '
       '<a href="/ops/jobs?status=failed">Failed</a> <a href="/ops/jobs?status=dead">Dead</a> '
       '<a href="" id="reload">Reload</a></nav>')


def status_badge(status: str) -> str:
    return f'<span class="status status-{e(status)}">{e(status)}</span>'


def number(value: Any) -> str:
    return "–" if value is None else e(value)


def queues_table(queues: list[dict[str, Any]]) -> str:
    if not queues:
        return '<p class="muted">No jobs yet.</p>'
    head = ("<tr><th>Queue</th><th class=num>Queued</th><th class=num>In progress</th><th class=num>Deferred</th>"
            "<th class=num>Failed</th><th class=num>Dead</th><th class=num>Oldest queued (s)</th>"
            "<th class=num>Done 1m / 5m / 15m</th><th class=num>Wait p50 / p99 (s)</th></tr>")
    rows = "".join(
        f"<tr><td><a href=\"/ops/jobs?{urlencode({'function': q['queue']})}\">{e(q['queue'])}</a></td>"
        f"<td class=num>{q['queued']}</td><td class=num>{q['in_progress']}</td><td class=num>{q['deferred']}</td>"
        f"<td class=num>{q['failed']}</td><td class=num>{q['dead']}</td>"
        f"<td class=num>{number(q['oldest_queued_age_seconds'])}</td>"
        f"<td class=num>{q['completed']['1m']} / {q['completed']['5m']} / {q['completed']['15m']}</td>"
        f"<td class=num>{number(q['time_in_queue_seconds']['p50'])} / "
        f"{number(q['time_in_queue_seconds']['p99'])}</td></tr>"
        for q in queues
    )
    return f'<table id="queues">{head}{rows}</table>'


def jobs_table(jobs: list[dict[str, Any]], table_id: str) -> str:
    if not jobs:
        return f'<p class="muted" id="{e(table_id)}">None.</p>'
    head = ("<tr><th>Job</th><th>Queue</th><th>Status</th><th class=num>Tries</th><th>Created</th>"
            "<th>Finished</th></tr>")
    rows = "".join(
        f"<tr><td><a href=\"/ops/jobs/{e(j['id'])}\">{e(j['id'])}</a></td><td>{e(j['function'])}</td>"
        f"<td>{status_badge(j['status'])}</td><td class=num>{j['tries']}</td><td>{e(j['created'])}</td>"
        f"<td>{e(j['finished'] or '')}</td></tr>"
        for j in jobs
    )
    return f'<table id="{e(table_id)}">{head}{rows}</table>'


def overview(queues: list[dict[str, Any]], recent: list[dict[str, Any]],
             failed: list[dict[str, Any]], dead: list[dict[str, Any]]) -> Page:
    body = (f"{NAV}{queues_table(queues)}"
            f"<h2>Failed (awaiting retry)</h2>{jobs_table(failed, 'failed-jobs')}"
            f"<h2>Dead</h2>{jobs_table(dead, 'dead-jobs')}"
            f"<h2>Recent jobs</h2>{jobs_table(recent, 'recent-jobs')}")
    return page("Queues", body)


def job_list(jobs: list[dict[str, Any]], filters: dict[str, str], next_cursor: str | None,
             statuses: tuple[str, ...]) -> Page:
    options = "".join(
        f'<option value="{e(s)}"{" selected" if filters.get("status") == s else ""}>{e(s)}</option>'
        for s in ("", *statuses)
    )
    form = (f'<form class="filters" method="get" action="/ops/jobs"><label>Status <select name="status">{options}'
            f'</select></label><label>Queue <input name="function" value="{e(filters.get("function", ""))}">'
            f"</label><button>Filter</button></form>")
    more = ""
    if next_cursor:
        query = urlencode({**{k: v for k, v in filters.items() if v}, "cursor": next_cursor})
        more = f'<p><a href="/ops/jobs?{e(query)}">Older jobs →</a></p>'
    return page("Jobs", f"{NAV}{form}{jobs_table(jobs, 'jobs')}{more}")


def action_form(job_id: str, action: str, label: str, csrf: str, danger: bool = False) -> str:
    css = ' class="danger"' if danger else ""
    return (f'<form class="inline" method="post" action="/ops/jobs/{e(job_id)}/{action}">'
            f'<input type="hidden" name="csrf" value="{e(csrf)}"><button{css} id="{action}">{label}</button></form>')


def job_page(job: dict[str, Any], csrf: str, can_retry: bool, can_abort: bool,
             flash: str | None = None, error: str | None = None) -> Page:
    notes = ""
    if flash:
        notes += f'<p class="flash" id="flash">{e(flash)}</p>'
    if error:
        notes += f'<p class="flash error" id="flash">{e(error)}</p>'
    buttons = ""
    if can_retry:
        buttons += action_form(job["id"], "retry", "Retry", csrf)
    if can_abort:
        buttons += " " + action_form(job["id"], "abort", "Abort", csrf, danger=True)
    facts = [("Queue", e(job["function"])), ("Status", status_badge(job["status"])), ("Tries", e(job["tries"])),
             ("Created", e(job["created"])), ("Deferred until", e(job["defer_until"] or "–")),
             ("Started", e(job["started"] or "–")), ("Finished", e(job["finished"] or "–")),
             ("Time in queue (s)", number(job["time_in_queue_seconds"])), ("Run (s)", number(job["run_seconds"])),
             ("Idempotency key", e(job["idempotency_key"]))]
    details = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts)
    outcome = ""
    if job.get("error"):
        outcome += f'<h2>Last error</h2><pre id="error">{e(job["error"])}</pre>'
    if job.get("result") is not None:
        outcome += f'<h2>Result</h2><pre id="result">{e(json.dumps(job["result"], indent=2))}</pre>'
    body = (f"{NAV}{notes}<p>{buttons}</p><dl class=\"facts\">{details}</dl>"
            f'<h2>Arguments</h2><pre id="args">{e(json.dumps(job["args"], indent=2))}</pre>{outcome}')
    return page(f"Job {job['id']}", body)


def message(title: str, text: str) -> Page:
    return page(title, f'<p class="flash error" role="alert">{e(text)}</p>')
