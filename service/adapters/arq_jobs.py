"""arq's side of ops' retry and abort: what arq holds for a job id, and bringing it in line with
the job's row once a retry or abort is committed (``service.ops``)."""

from __future__ import annotations

from typing import Any

from arq.constants import abort_jobs_ss, in_progress_key_prefix, job_key_prefix, result_key_prefix, retry_key_prefix

from service.adapters.queue import Queue
from service.domain.jobs import JobStatus
from service.domain.model import now


def timestamp_ms() -> int:
    return int(now().timestamp() * 1000)


async def arq_state(redis: Any, queue_name: str, job_id: str) -> dict[str, Any]:
    """What arq holds for the id right now (it may differ from the row, which decides)."""
    async with redis.pipeline(transaction=False) as pipe:
        pipe.zscore(queue_name, job_id)
        pipe.exists(in_progress_key_prefix + job_id)
        pipe.exists(result_key_prefix + job_id)
        score, running, result = await pipe.execute()
    return {"in_queue": score is not None, "running": bool(running), "result_kept": bool(result)}


async def clear_arq_leftovers(redis: Any, *job_ids: str) -> None:
    """arq refuses an id while it keeps its result, counts tries per id, and would abort the
    next run of an id that still has an abort mark: none of that may outlive a retry."""
    if not job_ids:
        return
    async with redis.pipeline(transaction=True) as pipe:
        pipe.delete(*(prefix + job_id for job_id in job_ids for prefix in (result_key_prefix, retry_key_prefix)))
        pipe.zrem(abort_jobs_ss, *job_ids)
        await pipe.execute()


async def after_retry(queue: Queue, job_id: str, function: str, before: str) -> bool:
    """Hands the job to arq; False if Redis could not take it now (the reconciler will)."""
    redis, queue_name = queue.redis, queue.queue_name
    if await redis.exists(in_progress_key_prefix + job_id):
        return True  # a worker still holds the id; it will claim the row again when it reruns it
    if before == JobStatus.FAILED and await redis.zscore(queue_name, job_id) is not None:
        await redis.zadd(queue_name, {job_id: timestamp_ms()}, xx=True)
        return True
    await clear_arq_leftovers(redis, job_id)
    await redis.delete(job_key_prefix + job_id)
    return await queue.enqueue(function, job_id)


async def after_abort(queue: Queue, job_id: str) -> str:
    """Takes a waiting job out of arq's queue, or asks the worker running it to cancel it."""
    redis, queue_name = queue.redis, queue.queue_name
    if await redis.exists(in_progress_key_prefix + job_id):
        await redis.zadd(abort_jobs_ss, {job_id: timestamp_ms()})
        return "cancel_requested"
    async with redis.pipeline(transaction=True) as pipe:
        pipe.zrem(queue_name, job_id)
        pipe.delete(job_key_prefix + job_id)
        await pipe.execute()
    return "removed_from_queue"
