"""``adminlink jobs list | show | retry | abort | stats`` and ``adminlink insights query``.

These run on the host, with the service's own configuration (database and Redis), as its
operator: ``--org`` narrows the jobs commands to one organization, and every retry or abort is
recorded in the job's organization's Directory Insights as done by ``adminlink`` at the CLI.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import shlex
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from service import config, insights_query, metrics
from service.adapters.unit_of_work import UnitOfWork
from service.bootstrap import Services, build
from service.domain.errors import InvalidRequest
from service.domain.model import now
from service.ops import views as ops
from service.ops.actions import abort_job, retry_job, system_actor

COMMANDS = ("jobs", "insights")
CSV_COLUMNS = ("timestamp", "event_type", "service", "success", "initiated_by.type", "initiated_by.email",
               "initiated_by.administrator", "resource.type", "resource.id", "resource.email",
               "target_resource.type", "client_ip", "id")


def add_commands(sub: Any) -> None:
    jobs = sub.add_parser("jobs", help="inspect and steer job queues (list, show, retry, abort, stats)")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True)
    listing = jobs_sub.add_parser("list", help="jobs, newest first")
    listing.add_argument("--status", choices=ops.STATUSES)
    listing.add_argument("--function", help="one queue (job function)")
    listing.add_argument("--since", help="created at or after this ISO 8601 time")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--cursor", help="the next page, as printed under the previous one")
    for name, text in (("show", "one job in full (secrets redacted)"), ("retry", "retry a failed or dead job"),
                       ("abort", "abort a queued or running job")):
        one = jobs_sub.add_parser(name, help=text)
        one.add_argument("job_id")
    stats = jobs_sub.add_parser("stats", help="per queue: waiting, running, failed, dead, throughput, waits")
    for parser in (listing, stats, *[jobs_sub.choices[n] for n in ("show", "retry", "abort")]):
        parser.add_argument("--org", help="only this organization's jobs")
        parser.add_argument("--json", action="store_true", help="print JSON instead of a table")

    insights = sub.add_parser("insights", help="Directory Insights")
    insights_sub = insights.add_subparsers(dest="insights_command", required=True)
    query = insights_sub.add_parser("query", help="export events as JSON lines or CSV (every page)")
    query.add_argument("--org", required=True, help="the organization whose events to export")
    query.add_argument("--start-time", required=True, help="RFC 3339, e.g. 2024-01-01T00:00:00Z")
    query.add_argument("--end-time")
    query.add_argument("--service", action="append", help="repeatable; default all")
    query.add_argument("--search-term", help="JumpCloud's search_term object, as JSON")
    query.add_argument("--fields", help="comma-separated fields (dot paths)")
    query.add_argument("--sort", default="ASC", help="ASC (default) or DESC")
    query.add_argument("--format", choices=("jsonl", "csv"), default="jsonl")
    query.add_argument("--output", help="a file to write (default: standard output)")
    query.add_argument("--page-size", type=int, default=1000)
    query.add_argument("--max", type=at_least_one, help="stop after this many events")


def at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def run(args: argparse.Namespace, settings: config.Settings) -> int:
    if args.command == "jobs":
        return asyncio.run(_with_services(settings, lambda services: JOB_COMMANDS[args.jobs_command](services, args)))
    # A refused query touches no file.
    query = insights_query.parse(args.org, query_body(args), now())
    if not args.output:
        return _export(settings, args, query, sys.stdout)
    try:
        out = open(args.output, "w", newline="")
    except OSError as exc:
        raise InvalidRequest("invalid_output", f"cannot write {args.output}: {exc.strerror}") from exc
    with out:
        return _export(settings, args, query, out)


def _export(settings: config.Settings, args: argparse.Namespace, query: insights_query.EventQuery,
            out: TextIO) -> int:
    return asyncio.run(_with_services(settings, lambda services: insights_export(services, args, query, out)))


async def _with_services(settings: config.Settings, command: Callable[[Services], Awaitable[int]]) -> int:
    services = await build(settings)
    try:
        return await command(services)
    finally:
        await services.close()


# --- tables ------------------------------------------------------------------------------------


def shown(value: Any) -> str:
    return "–" if value is None else str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[shown(v) for v in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    rule = "  ".join("-" * w for w in widths)
    body = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join([line, rule, *body])


def short_time(value: str | None) -> str | None:
    return value[:19].replace("T", " ") if value else None


def emit(args: argparse.Namespace, data: Any, text: str) -> None:
    print(json.dumps(data, indent=2) if args.json else text)


# --- jobs --------------------------------------------------------------------------------------


def operator_uow(services: Services, args: argparse.Namespace) -> UnitOfWork:
    """The host's operator reading jobs (of ``--org`` only, when given)."""
    return services.uow(system_actor(args.org, "adminlink jobs"))


async def jobs_list(services: Services, args: argparse.Namespace) -> int:
    query = ops.JobQuery(args.status, args.function, ops.parse_since(args.since, "--since"), args.limit, args.cursor)
    async with operator_uow(services, args) as uow:
        rows, next_cursor = await ops.list_jobs(uow.jobs, args.org, query)
    jobs = [ops.job_summary(r) for r in rows]
    text = table(("ID", "QUEUE", "STATUS", "TRIES", "CREATED", "FINISHED"),
                 [(j["id"], j["function"], j["status"], j["tries"], short_time(j["created"]),
                   short_time(j["finished"])) for j in jobs])
    if next_cursor:
        text += f"\n\nmore: adminlink jobs list {next_page_arguments(args, next_cursor)}"
    emit(args, {"results": jobs, "next_cursor": next_cursor}, text)
    return 0


def next_page_arguments(args: argparse.Namespace, cursor: str) -> str:
    """The same filters and the next page's cursor, quoted for a shell."""
    given = {"--status": args.status, "--function": args.function, "--since": args.since,
             "--limit": str(args.limit), "--org": args.org, "--cursor": cursor}
    return " ".join(f"{flag} {shlex.quote(value)}" for flag, value in given.items() if value)


async def jobs_show(services: Services, args: argparse.Namespace) -> int:
    async with operator_uow(services, args) as uow:
        row = await ops.load_job(uow.jobs, args.org, args.job_id)
    job = ops.job_detail(row)
    facts = [(k, job[k]) for k in ("id", "organization_id", "function", "status", "tries", "created", "enqueued",
                                   "defer_until", "started", "finished", "time_in_queue_seconds", "run_seconds",
                                   "idempotency_key")]
    text = "\n".join(f"{k:<22} {'–' if v is None else v}" for k, v in facts)
    text += "\n\nargs:\n" + json.dumps(job["args"], indent=2)
    if job["result"] is not None:
        text += "\n\nresult:\n" + json.dumps(job["result"], indent=2)
    if job["error"]:
        text += "\n\nerror:\n" + job["error"]
    emit(args, job, text)
    return 0


async def _job_org(services: Services, args: argparse.Namespace) -> str | None:
    async with operator_uow(services, args) as uow:
        row = await ops.load_job(uow.jobs, args.org, args.job_id)
    return str(row.organization_id) if row.organization_id else None


def embedded_note(services: Services) -> str:
    if not services.settings.embedded_redis:
        return ""
    return ("\nnote: with the embedded queue, the running server's reconciler hands the job to its worker "
            "within 30 seconds")


async def jobs_retry(services: Services, args: argparse.Namespace) -> int:
    actor = system_actor(await _job_org(services, args), "adminlink jobs retry")
    done = await retry_job(services, actor, args.job_id, reaches_workers=not services.settings.embedded_redis)
    handed = "enqueued" if done["enqueued"] else "the reconciler will enqueue it"
    emit(args, done, f"job {done['job_id']} retried: {done['status']}, {handed}" + embedded_note(services))
    return 0


async def jobs_abort(services: Services, args: argparse.Namespace) -> int:
    actor = system_actor(await _job_org(services, args), "adminlink jobs abort")
    done = await abort_job(services, actor, args.job_id, reaches_workers=not services.settings.embedded_redis)
    emit(args, done, f"job {done['job_id']} aborted (was {done['was']}; arq: {done['arq']})")
    return 0


async def jobs_stats(services: Services, args: argparse.Namespace) -> int:
    async with operator_uow(services, args) as uow:
        stats = await ops.queue_stats(uow.jobs, args.org, now())
    await _add_batch_sizes(services, stats)
    text = table(
        ("QUEUE", "QUEUED", "RUNNING", "DEFERRED", "FAILED", "DEAD", "OLDEST(s)", "DONE 1m/5m/15m", "WAIT p50/p99(s)",
         "BATCHES", "BATCH avg"),
        [(q["queue"], q["queued"], q["in_progress"], q["deferred"], q["failed"], q["dead"],
          q["oldest_queued_age_seconds"], "/".join(str(q["completed"][w]) for w in ops.WINDOWS),
          "/".join(shown(q["time_in_queue_seconds"][p]) for p in ("p50", "p99")),
          q["batches"]["count"], q["batches"]["mean_size"]) for q in stats],
    )
    emit(args, {"queues": stats}, text if stats else "no jobs")
    return 0


async def _add_batch_sizes(services: Services, stats: list[dict[str, Any]]) -> None:
    """How many batches each queue's jobs ran in (webhook events are applied in batches) and
    their mean size, from the workers' counters in Redis (none when the CLI cannot reach it)."""
    try:
        totals = metrics.parse_job_totals(await services.redis.hgetall(metrics.JOBS_KEY))  # type: ignore[misc]
    except Exception:  # noqa: BLE001 (the workers' Redis unreachable: the table says –)
        totals = metrics.JobTotals()
    for queue in stats:
        count, jobs = totals.batches(queue["queue"])
        queue["batches"] = {"count": count or None, "mean_size": round(jobs / count, 1) if count else None}


JOB_COMMANDS = {"list": jobs_list, "show": jobs_show, "retry": jobs_retry, "abort": jobs_abort, "stats": jobs_stats}


# --- insights ----------------------------------------------------------------------------------


def query_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {"service": args.service or ["all"], "start_time": args.start_time,
                            "sort": args.sort, "limit": args.page_size}
    if args.end_time:
        body["end_time"] = args.end_time
    if args.search_term:
        try:
            body["search_term"] = json.loads(args.search_term)
        except ValueError as exc:
            raise InvalidRequest("invalid_search_term", "--search-term must be JSON") from exc
    if args.fields:
        body["fields"] = [f.strip() for f in args.fields.split(",") if f.strip()]
    return body


def cell(event: dict[str, Any], path: str) -> str:
    value: Any = event
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None:
        return ""
    text = json.dumps(value) if isinstance(value, dict | list | bool) else str(value)
    # A spreadsheet would run a cell starting like a formula.
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


class Writer:
    def __init__(self, out: TextIO, fmt: str, columns: Sequence[str]) -> None:
        self.out, self.fmt, self.columns = out, fmt, list(columns)
        self.csv = csv.writer(out) if fmt == "csv" else None
        if self.csv is not None:
            self.csv.writerow(self.columns)

    def write(self, raw: str) -> None:
        if self.csv is None:
            self.out.write(raw + "\n")
        else:
            event = json.loads(raw)
            self.csv.writerow([cell(event, c) for c in self.columns])


async def insights_export(services: Services, args: argparse.Namespace, query: insights_query.EventQuery,
                          out: TextIO) -> int:
    columns = args.fields.split(",") if args.fields else CSV_COLUMNS
    written = 0
    writer = Writer(out, args.format, [c.strip() for c in columns if c.strip()])
    while True:
        page = await services.insights.page(query)
        for raw in page.bodies[: (args.max - written) if args.max else None]:
            writer.write(raw)
            written += 1
        done = len(page.bodies) < query.limit or (args.max is not None and written >= args.max)
        if done or page.last is None:
            break
        query = replace(query, search_after=page.last)
    out.flush()
    where = f" to {Path(args.output)}" if args.output else ""
    print(f"{written} events exported{where}", file=sys.stderr)
    return 0
