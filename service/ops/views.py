"""Reading job queues for ops: per-queue statistics, listings paged by cursor, a job's detail."""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from service import views
from service.domain.errors import InvalidRequest, NotFound
from service.domain.jobs import RUNNABLE, JobStatus
from service.domain.model import aware
from service.logging import redact, redact_text
from service.ops.repository import JobRepository
from service.views import iso

STATUSES = tuple(status.value for status in JobStatus)  # as the API, dashboard and CLI name them
COUNTED = (*RUNNABLE, JobStatus.DEAD)  # the statuses queue_stats counts per queue
WINDOWS = {"1m": timedelta(minutes=1), "5m": timedelta(minutes=5), "15m": timedelta(minutes=15)}
WAIT_SAMPLE = 5000
MAX_PAGE = 500
JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")  # adminlink's ids (hex); anything else names no job


def percentile(values: list[float], fraction: float) -> float | None:
    """Nearest-rank percentile."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((aware(end) - aware(start)).total_seconds(), 3)  # type: ignore[operator]


def ready_at(row: Any) -> datetime:
    """When the job's latest try could run: its creation, or the moment its backoff or a retry
    made it ready (``defer_until``)."""
    created = aware(row.created_at)
    deferred = aware(row.defer_until)
    assert created is not None
    return max(created, deferred) if deferred is not None else created


async def queue_stats(jobs: JobRepository, org_id: str | None, at: datetime) -> list[dict[str, Any]]:
    """Per queue (job function): how many wait, run, are deferred, failed or dead; the age of the
    oldest job ready to run; jobs completed in the last 1 / 5 / 15 minutes; and the p50 / p99
    time completed first tries waited in the queue."""
    stats: dict[str, dict[str, Any]] = {}

    def entry(function: str) -> dict[str, Any]:
        return stats.setdefault(function, {
            "queue": function, "queued": 0, "in_progress": 0, "deferred": 0, "failed": 0, "dead": 0,
            "oldest_queued_age_seconds": None, "completed": dict.fromkeys(WINDOWS, 0),
            "time_in_queue_seconds": {"p50": None, "p99": None},
        })

    for function, status, deferred, count in await jobs.status_counts(org_id, at, COUNTED):
        entry(function)["deferred" if deferred else status] += int(count)
    for function, oldest in await jobs.oldest_ready(org_id, at):
        entry(function)["oldest_queued_age_seconds"] = seconds_between(aware(oldest), at)
    for function, *counts in await jobs.completed(org_id, at, tuple(WINDOWS.values())):
        entry(function)["completed"] = {w: int(c or 0) for w, c in zip(WINDOWS, counts, strict=True)}
    for function, waits in (await _waits(jobs, org_id, at)).items():
        entry(function)["time_in_queue_seconds"] = {"p50": percentile(waits, 0.5), "p99": percentile(waits, 0.99)}
    return [stats[name] for name in sorted(stats)]


async def _waits(jobs: JobRepository, org_id: str | None, at: datetime) -> dict[str, list[float]]:
    """Queue waits of first tries completed in the last 15 minutes (a retry's wait is its backoff)."""
    waits: dict[str, list[float]] = {}
    for row in await jobs.first_tries_completed(org_id, at - WINDOWS["15m"], WAIT_SAMPLE):
        waited = seconds_between(ready_at(row), row.started_at)
        waits.setdefault(row.function, []).append(max(0.0, waited or 0.0))
    return waits


@dataclass(frozen=True)
class JobQuery:
    status: str | None = None
    function: str | None = None
    since: datetime | None = None
    limit: int = 50
    cursor: str | None = None


def encode_cursor(row: Any) -> str:
    raw = json.dumps([aware(row.created_at).isoformat(), row.id])  # type: ignore[union-attr]
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created, job_id = json.loads(raw)
        assert isinstance(created, str) and isinstance(job_id, str) and JOB_ID.fullmatch(job_id)
        return utc_moment(created), job_id
    except (ValueError, TypeError, OverflowError, AssertionError, binascii.Error) as exc:
        raise InvalidRequest("invalid_cursor", "cursor is not one this API handed out") from exc


def validate_query(query: JobQuery) -> None:
    if query.status is not None and query.status not in STATUSES:
        raise InvalidRequest("invalid_query", f"status must be one of: {', '.join(STATUSES)}")
    if query.function is not None and not (0 < len(query.function) <= 100 and query.function.isprintable()):
        raise InvalidRequest("invalid_query", "function must be 1 to 100 printable characters")
    if not 1 <= query.limit <= MAX_PAGE:
        raise InvalidRequest("invalid_query", f"limit must be between 1 and {MAX_PAGE}")


async def list_jobs(jobs: JobRepository, org_id: str | None, query: JobQuery) -> tuple[list[Any], str | None]:
    """Newest first, paged with an opaque cursor (stable while jobs are added)."""
    validate_query(query)
    after = decode_cursor(query.cursor) if query.cursor else None
    rows = await jobs.page(org_id, status=query.status or None, function=query.function or None,
                           since=query.since or None, after=after, limit=query.limit + 1)
    more = len(rows) > query.limit
    rows = rows[: query.limit]
    return rows, encode_cursor(rows[-1]) if more else None


async def load_job(jobs: JobRepository, org_id: str | None, job_id: str) -> Any:
    if not JOB_ID.fullmatch(job_id):
        raise NotFound("job_not_found", "no such job")
    row = await jobs.get(org_id, job_id)
    if row is None:
        raise NotFound("job_not_found", "no such job")
    return row


def parse_since(raw: str | None, name: str = "since") -> datetime | None:
    """The ``since`` filter of the ops API, dashboard and CLI: ISO 8601; without a zone, UTC.
    Absent is no filter; given but empty is not a date-time, and refused."""
    if raw is None:
        return None
    try:
        return utc_moment(raw.replace("Z", "+00:00"))
    except (ValueError, OverflowError) as exc:
        raise InvalidRequest("invalid_query", f"{name} must be an ISO 8601 date-time between the years 1 and "
                                              "9999 in UTC") from exc


def utc_moment(text: str) -> datetime:
    """An ISO 8601 date-time as UTC (without a zone, it is UTC): SQLite compares the stored text,
    so an offset must be converted, not kept. OverflowError when UTC leaves the years 1-9999."""
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def job_summary(row: Any) -> dict[str, Any]:
    return {
        **views.job(row),
        "defer_until": iso(row.defer_until),
        "time_in_queue_seconds": seconds_between(ready_at(row), row.started_at),
        "run_seconds": seconds_between(row.started_at, row.finished_at),
    }


def job_detail(row: Any) -> dict[str, Any]:
    """Everything about one job; secrets in its arguments, result and traceback are redacted."""
    return {
        **job_summary(row),
        "organization_id": row.organization_id,
        "idempotency_key": redact_text(row.idempotency_key),
        "args": redact(row.args),
        "result": redact(row.result),
        "error": redact_text(row.error) if row.error else None,
    }
