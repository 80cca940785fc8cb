"""The ops dashboard's HTML, rendered on the server from plain strings: no scripts, no build step.
Every value that reaches a page goes through ``html.escape`` (job arguments come from outside)."""

from __future__ import annotations

import json
from html import escape
from typing import Any
from urllib.parse import urlencode

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2330;background:#f4f6f9}
header{background:#1d2330;color:#fff;padding:10px 24px;display:flex;gap:24px;align-items:baseline}
header a{color:#c9d4ff;text-decoration:none}header strong{font-size:16px}
main{padding:16px 24px;max-width:1300px}
h1{font-size:20px;margin:8px 0 12px}h2{font-size:16px;margin:24px 0 8px}
table{border-collapse:collapse;width:100%;background:#fff;box-shadow:0 1px 2px #0002}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid #e3e7ee;vertical-align:top}
th{background:#eef1f6;font-weight:600}td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}
.status{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;background:#e3e7ee}
.status-complete{background:#d5f2dd}.status-failed{background:#ffe6bf}.status-dead{background:#ffd2d2}
.status-aborted{background:#e0d9f7}.status-in_progress{background:#d4e6ff}.status-queued{background:#eef1f6}
.flash{padding:8px 12px;border-radius:4px;margin:8px 0;background:#d5f2dd}.flash.error{background:#ffd2d2}
pre{background:#fff;padding:10px;overflow:auto;box-shadow:0 1px 2px #0002;max-height:420px}
dl{display:grid;grid-template-columns:max-content auto;gap:4px 16px;background:#fff;padding:12px;margin:0}
dt{font-weight:600}dd{margin:0}form.inline{display:inline}
button{font:inherit;padding:5px 14px;border-radius:4px;border:1px solid #8792a8;background:#fff;cursor:pointer}
button.danger{border-color:#c0392b;color:#c0392b}.muted{color:#6b7385}
.filters{display:flex;gap:8px;align-items:center;margin:8px 0}
"""

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def e(value: Any) -> str:
    return escape("" if value is None else str(value))


def page(title: str, body: str, who: str | None = None, refresh: int | None = None) -> str:
    meta = f'<meta http-equiv="refresh" content="{refresh}">' if refresh else ""
    nav = (f'<a href="/ops/">Queues</a><a href="/ops/jobs">Jobs</a>'
           f'<a href="/ops/jobs?status=failed">Failed</a><a href="/ops/jobs?status=dead">Dead</a>'
           f'<span class="muted">{e(who)}</span>') if who else ""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8">{meta}'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{e(title)} · adminlink ops</title><style>{STYLE}</style></head>"
            f"<body><header><strong>adminlink ops</strong>{nav}</header><main>{body}</main></body></html>")


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


def overview(who: str, queues: list[dict[str, Any]], recent: list[dict[str, Any]],
             failed: list[dict[str, Any]], dead: list[dict[str, Any]]) -> str:
    body = (f"<h1>Queues</h1>{queues_table(queues)}"
            f"<h2>Failed (awaiting retry)</h2>{jobs_table(failed, 'failed-jobs')}"
            f"<h2>Dead</h2>{jobs_table(dead, 'dead-jobs')}"
            f"<h2>Recent jobs</h2>{jobs_table(recent, 'recent-jobs')}")
    return page("Queues", body, who, refresh=15)


def job_list(who: str, jobs: list[dict[str, Any]], filters: dict[str, str], next_cursor: str | None,
             statuses: tuple[str, ...]) -> str:
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
    return page("Jobs", f"<h1>Jobs</h1>{form}{jobs_table(jobs, 'jobs')}{more}", who)


def action_form(job_id: str, action: str, label: str, csrf: str, danger: bool = False) -> str:
    css = ' class="danger"' if danger else ""
    return (f'<form class="inline" method="post" action="/ops/jobs/{e(job_id)}/{action}">'
            f'<input type="hidden" name="csrf" value="{e(csrf)}"><button{css} id="{action}">{label}</button></form>')


def job_page(who: str, job: dict[str, Any], csrf: str, can_retry: bool, can_abort: bool,
             flash: str | None = None, error: str | None = None, status: int = 200) -> str:
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
    body = (f"<h1>Job {e(job['id'])}</h1>{notes}<p>{buttons}</p><dl>{details}</dl>"
            f'<h2>Arguments</h2><pre id="args">{e(json.dumps(job["args"], indent=2))}</pre>{outcome}')
    return page(f"Job {job['id']}", body, who)


def message(title: str, text: str, who: str | None = None) -> str:
    return page(title, f"<h1>{e(title)}</h1><p>{e(text)}</p>", who)


def sign_in_required() -> str:
    text = ("Sign in to the admin portal first: this page uses the admin portal's session "
            "(the adminlink_session cookie set by POST /auth/admin/login and its MFA step). "
            "It is open to the Administrator and Administrator with Billing roles.")
    return message("Sign in required", text)
