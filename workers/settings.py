"""arq worker settings: ``arq workers.WorkerSettings`` runs a worker as arq users expect."""

from __future__ import annotations

from typing import Any, ClassVar

from arq import cron
from arq.connections import RedisSettings

from service import config
from service.adapters.queue import deserialize, serialize
from service.bootstrap import build
from workers.jobs import reconcile_jobs, send_email
from workers.maintenance import count_job, on_job_start, purge_idempotency_keys, purge_insights
from workers.webhook_jobs import apply_webhook, drain_webhooks, wake_again

FUNCTIONS = [send_email, apply_webhook, drain_webhooks]


async def after_job_end(ctx: dict[str, Any]) -> None:
    await count_job(ctx)
    await wake_again(ctx)


async def startup(ctx: dict[str, Any]) -> None:
    if "services" not in ctx:  # `adminlink serve` hands in the web app's own services
        ctx["services"] = await build(config.load(), redis=ctx.get("redis"))
        ctx["owns_services"] = True


async def shutdown(ctx: dict[str, Any]) -> None:
    if ctx.get("owns_services"):
        await ctx["services"].engine.dispose()


def worker_options(settings: config.Settings) -> dict[str, Any]:
    """The worker's knobs, chosen on purpose (see the README):
    - poll_delay: arq finds new jobs by polling; this is the latency floor of every job.
    - max_jobs: jobs one worker runs at once; each may hold a database connection.
    - job_timeout: a job running longer is cancelled; a killed worker's jobs rerun after it + 10 s.
    - max_tries: our own retry limit lives in the jobs table; arq's is one above it.
    """
    return {
        "functions": FUNCTIONS,
        "cron_jobs": [cron(reconcile_jobs, second={0, 30}, run_at_startup=True, unique=True),
                      cron(purge_insights, minute=17, second=0, unique=True),
                      cron(purge_idempotency_keys, minute=47, second=0, unique=True)],
        "queue_name": settings.queue_name,
        "poll_delay": settings.job_poll_delay,
        "max_jobs": settings.job_max_jobs,
        "job_timeout": settings.job_timeout,
        "max_tries": settings.job_max_tries + 1,
        "health_check_interval": 30,
        "keep_result": 3600,
        "job_serializer": serialize,
        "job_deserializer": deserialize,
        "on_startup": startup,
        "on_shutdown": shutdown,
        # Ops: abort of a running job (service/ops.py), job correlation ids and job metrics.
        "allow_abort_jobs": True,
        "on_job_start": on_job_start,
        "after_job_end": after_job_end,
    }


class WorkerSettings:
    """Read by the ``arq`` command. Values come from the same ``ADMINLINK_*`` settings."""

    _settings = config.load()
    _options = worker_options(_settings)
    functions: ClassVar[list[Any]] = _options["functions"]
    cron_jobs: ClassVar[list[Any]] = _options["cron_jobs"]
    queue_name = _options["queue_name"]
    poll_delay = _options["poll_delay"]
    max_jobs = _options["max_jobs"]
    job_timeout = _options["job_timeout"]
    max_tries = _options["max_tries"]
    health_check_interval = _options["health_check_interval"]
    keep_result = _options["keep_result"]
    job_serializer = staticmethod(serialize)
    job_deserializer = staticmethod(deserialize)
    on_startup = staticmethod(startup)
    on_shutdown = staticmethod(shutdown)
    allow_abort_jobs = _options["allow_abort_jobs"]
    on_job_start = staticmethod(on_job_start)
    after_job_end = staticmethod(after_job_end)
    redis_settings = RedisSettings.from_dsn(_settings.redis_url or "redis://127.0.0.1:6379")
