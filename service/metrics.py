"""Prometheus metrics.

- HTTP requests by route and status, with a latency histogram (this process).
- Sign-in attempts by portal, step and result, and webhook signature failures, read from the
  answers of those routes (this process).
- Jobs by function and outcome with a duration histogram. Workers may run in other processes,
  so each worker adds its observations to counters in Redis, and ``/metrics`` reads them there.
- Queue depth: the jobs table by function and status, and the length of arq's queue, read at
  scrape time.
"""

from __future__ import annotations

import collections
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from service.logging import log_error, route_of

if TYPE_CHECKING:
    from service.bootstrap import Services

log = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
REGISTRY = CollectorRegistry(auto_describe=True)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
JOB_BUCKETS = (0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0)
BATCH_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)

HTTP_REQUESTS = Counter(
    "adminlink_http_requests", "HTTP requests answered, by route pattern and status.",
    ["method", "route", "status"], registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "adminlink_http_request_duration_seconds", "Time to answer an HTTP request, by route pattern.",
    ["method", "route"], buckets=LATENCY_BUCKETS, registry=REGISTRY,
)
SIGNIN_ATTEMPTS = Counter(
    "adminlink_signin_attempts", "Sign-in requests by portal, step and result (ok or the error code).",
    ["portal", "step", "result"], registry=REGISTRY,
)
WEBHOOK_SIGNATURE_FAILURES = Counter(
    "adminlink_webhook_signature_failures", "Webhook deliveries refused for their signature, by receiver.",
    ["receiver", "code"], registry=REGISTRY,
)
WEBHOOK_BATCH_DELIVERIES = Histogram(
    "adminlink_webhook_batch_deliveries", "Webhook deliveries a receiver recorded together, per batch (this process).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256), registry=REGISTRY,
)

# --- HTTP middleware ---------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # redirects raised past the error middleware
        observe(request, exc.status, None, time.perf_counter() - started)
        raise
    except BaseException:
        observe(request, 500, None, time.perf_counter() - started)
        raise
    observe(request, response.status, response, time.perf_counter() - started)
    return response


def observe(request: web.Request, status: int, response: web.StreamResponse | None, seconds: float) -> None:
    route = route_of(request)
    HTTP_REQUESTS.labels(request.method, route, str(status)).inc()
    HTTP_LATENCY.labels(request.method, route).observe(seconds)
    signin = SIGNIN_ROUTES.get((request.method, route))
    if signin is not None:
        SIGNIN_ATTEMPTS.labels(*signin, _result(status, response)).inc()
    elif route.startswith("/webhooks/") and _is_signature_failure(status, response):
        WEBHOOK_SIGNATURE_FAILURES.labels(route.split("/")[2], _error_code(response) or str(status)).inc()


def _signin_routes() -> dict[tuple[str, str], tuple[str, str]]:
    """Every request that tries to sign in, by method and route: (portal, step). Step-up from the
    user portal (launch-admin-portal) signs in to the admin portal; Duo's callback completes a
    sign-in of either portal."""
    steps = {"": None, "/mfa/start": "start", "/mfa": "mfa"}
    routes = {("POST", prefix + suffix): (portal, step or prefix.rsplit("/", 1)[-1])
              for prefix, portal in (("/auth/admin/login", "admin"), ("/auth/user/login", "user"),
                                     ("/auth/user/launch-admin-portal", "admin"))
              for suffix, step in steps.items()}
    return {**routes, ("POST", "/auth/user/go"): ("user", "go"), ("GET", "/auth/duo/callback"): ("any", "duo")}


SIGNIN_ROUTES = _signin_routes()


def _is_signature_failure(status: int, response: web.StreamResponse | None) -> bool:
    # Receivers answer 401 to a delivery they cannot authenticate; a 400 whose code names the
    # signature or its timestamp is a malformed signature header.
    if status == 401:
        return True
    if status != 400:  # most answers: not one to read
        return False
    code = _error_code(response) or ""
    return "signature" in code or "timestamp" in code


def _result(status: int, response: web.StreamResponse | None) -> str:
    if status == 202:  # a push or Duo factor still waiting for the person's answer
        return "pending"
    if status < 400:
        return "ok"
    return _error_code(response) or str(status)


def _error_code(response: web.StreamResponse | None) -> str | None:
    """The stable error code of a JSON error answer (a bounded set, safe as a label)."""
    if not isinstance(response, web.Response) or not isinstance(response.body, bytes):
        return None
    if response.content_type not in ("application/json", "application/scim+json"):
        return None
    try:
        body = json.loads(response.body)
    except ValueError:
        return None
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return code[:60] if isinstance(code, str) else None


# --- jobs: observed by workers, kept in Redis --------------------------------------------------

JOBS_KEY = "adminlink:metrics:jobs"
_STARTED = "_adminlink_metrics_started"
_ENDED_AS = "_adminlink_metrics_ended_as"
_COUNTED = "_adminlink_metrics_counted"


def job_started(ctx: dict[str, Any]) -> None:
    ctx[_STARTED] = time.perf_counter()


def counted_by_batch(ctx: dict[str, Any]) -> None:
    """The job's rows are counted by the batch that applied them (``record_batch``), not here."""
    ctx[_COUNTED] = True


def job_ended_as(ctx: dict[str, Any], function: str, status: str) -> None:
    """Called by the job itself with the status it gave its row, so counting it reads nothing."""
    ctx[_ENDED_AS] = (function, status)


async def job_finished(ctx: dict[str, Any]) -> None:
    """Adds one job run to the shared counters: its function and outcome (the status its row
    ended in) and how long it ran. Cron jobs have no row and are not counted."""
    started = ctx.get(_STARTED)
    services: Services | None = ctx.get("services")
    job_id = str(ctx.get("job_id", ""))
    if started is None or services is None or job_id.startswith("cron:") or ctx.get(_COUNTED):
        return
    seconds = time.perf_counter() - started
    try:
        # A run cut off (aborted, timed out) never said how it ended: its row tells.
        ended_as = ctx.get(_ENDED_AS) or await _job_row(services, job_id)
        if ended_as is None:
            return
        function, status = ended_as
        await record_job(services.redis, function, _outcome(status), seconds)
    except Exception as exc:  # metrics never fail a job
        log_error(log, exc, "could not record metrics for job %s", job_id, level=logging.WARNING)


async def _job_row(services: Services, job_id: str) -> tuple[str, str] | None:
    row = await services.jobs.get(job_id)
    return (row.function, row.status) if row is not None else None


def _outcome(status: str) -> str:
    # A row still in progress after its run was cancelled (aborted or timed out).
    return "cancelled" if status == "in_progress" else status


async def record_job(redis: Any, function: str, outcome: str, seconds: float) -> None:
    async with redis.pipeline(transaction=False) as pipe:
        _count_jobs(pipe, function, outcome, 1, seconds)
        await pipe.execute()


def _count_jobs(pipe: Any, function: str, outcome: str, runs: int, seconds: float) -> None:
    bucket = next((str(b) for b in JOB_BUCKETS if seconds <= b), "+Inf")
    pipe.hincrby(JOBS_KEY, f"count\t{function}\t{outcome}", runs)
    pipe.hincrby(JOBS_KEY, f"bucket\t{function}\t{outcome}\t{bucket}", runs)
    pipe.hincrbyfloat(JOBS_KEY, f"sum\t{function}\t{outcome}", seconds * runs)


async def record_batch(redis: Any, function: str, statuses: list[str], seconds: float) -> None:
    """A batch of jobs applied together (webhook events): each job counts as a run of the batch's
    duration, and the batch's size goes to the batch-size histogram. Never fails the batch."""
    if not statuses:
        return
    size = len(statuses)
    bucket = next((str(b) for b in BATCH_BUCKETS if size <= b), "+Inf")
    try:
        async with redis.pipeline(transaction=False) as pipe:
            for status, runs in collections.Counter(statuses).items():
                _count_jobs(pipe, function, _outcome(status), runs, seconds)
            pipe.hincrby(JOBS_KEY, f"batch\t{function}\t{bucket}", 1)
            pipe.hincrby(JOBS_KEY, f"batch_sum\t{function}", size)
            await pipe.execute()
    except Exception as exc:  # metrics never fail a job
        log_error(log, exc, "could not record metrics of a batch of %d %s jobs", size, function,
                  level=logging.WARNING)


@dataclass
class JobTotals:
    counts: dict[tuple[str, str], float] = field(default_factory=dict)
    sums: dict[tuple[str, str], float] = field(default_factory=dict)
    buckets: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    batch_buckets: dict[str, dict[str, float]] = field(default_factory=dict)  # function -> bucket -> batches
    batch_sums: dict[str, float] = field(default_factory=dict)  # function -> jobs in its batches

    def batches(self, function: str) -> tuple[int, float]:
        """How many batches of the function ran, and how many jobs they held together."""
        return int(sum(self.batch_buckets.get(function, {}).values())), self.batch_sums.get(function, 0.0)


def parse_job_totals(raw: dict[Any, Any]) -> JobTotals:
    totals = JobTotals()
    for key, value in raw.items():
        parts = (key.decode() if isinstance(key, bytes) else str(key)).split("\t")
        number = float(value)
        if parts[0] == "count" and len(parts) == 3:
            totals.counts[(parts[1], parts[2])] = number
        elif parts[0] == "sum" and len(parts) == 3:
            totals.sums[(parts[1], parts[2])] = number
        elif parts[0] == "bucket" and len(parts) == 4:
            totals.buckets.setdefault((parts[1], parts[2]), {})[parts[3]] = number
        elif parts[0] == "batch" and len(parts) == 3:
            totals.batch_buckets.setdefault(parts[1], {})[parts[2]] = number
        elif parts[0] == "batch_sum" and len(parts) == 2:
            totals.batch_sums[parts[1]] = number
    return totals


# --- scrape ------------------------------------------------------------------------------------


@dataclass
class Snapshot:
    jobs: JobTotals
    depth: dict[tuple[str, str], int]
    arq_queue_length: int | None


class SnapshotCollector(Collector):
    """Serves values read (asynchronously) just before the scrape."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterable[Metric]:
        yield from self._jobs()
        depth = GaugeMetricFamily("adminlink_queue_depth", "Jobs waiting or running, by function and status.",
                                  labels=["function", "status"])
        for (function, status), count in sorted(self.snapshot.depth.items()):
            depth.add_metric([function, status], count)
        yield depth
        if self.snapshot.arq_queue_length is not None:
            yield GaugeMetricFamily("adminlink_arq_queue_length", "Job ids in arq's Redis queue (due or deferred).",
                                    value=self.snapshot.arq_queue_length)

    def _jobs(self) -> Iterator[Metric]:
        totals = self.snapshot.jobs
        runs = CounterMetricFamily("adminlink_jobs", "Job runs by function and outcome.",
                                   labels=["function", "outcome"])
        durations = HistogramMetricFamily("adminlink_job_duration_seconds", "Time a job run took.",
                                          labels=["function", "outcome"])
        for labels in sorted(totals.counts):
            runs.add_metric(list(labels), totals.counts[labels])
            points = _cumulative(totals.buckets.get(labels, {}), JOB_BUCKETS)
            durations.add_metric(list(labels), points, totals.sums.get(labels, 0.0))
        yield runs
        yield durations
        sizes = HistogramMetricFamily("adminlink_job_batch_size", "Jobs applied together in one transaction "
                                      "(webhook events), per batch.", labels=["function"])
        for function in sorted(totals.batch_buckets):
            points = _cumulative(totals.batch_buckets[function], BATCH_BUCKETS)
            sizes.add_metric([function], points, totals.batch_sums.get(function, 0.0))
        yield sizes


def _cumulative(per_bucket: dict[str, float], bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    """Prometheus' cumulative buckets from counts per upper bound."""
    cumulative, points = 0.0, []
    for bound in [*map(str, bounds), "+Inf"]:
        cumulative += per_bucket.get(bound, 0.0)
        points.append((bound, cumulative))
    return points


async def snapshot(services: Services) -> Snapshot:
    raw: dict[Any, Any] = await services.redis.hgetall(JOBS_KEY)  # type: ignore[misc]
    depth = await services.jobs.depth()
    length = await services.redis.zcard(services.settings.queue_name)
    return Snapshot(parse_job_totals(raw), depth, int(length))


async def render(services: Services) -> bytes:
    scraped = CollectorRegistry(auto_describe=False)
    scraped.register(SnapshotCollector(await snapshot(services)))
    return generate_latest(REGISTRY) + generate_latest(scraped)
