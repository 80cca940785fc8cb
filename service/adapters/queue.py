"""The arq queue: Redis (or the embedded in-process fakeredis) and a JSON job serializer.

Jobs carry only JSON, never pickle: with pickle, anyone who can write to Redis runs code on
the workers.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any

import arq.worker
import fakeredis
from arq.connections import ArqRedis, RedisSettings, create_pool
from arq.constants import job_key_prefix, result_key_prefix
from arq.jobs import serialize_job
from arq.utils import timestamp_ms
from redis.asyncio import ConnectionPool

log = logging.getLogger(__name__)

# A Redis that does not answer within this is as good as down. Work that only hands committed
# rows to Redis (or cleans up after them) gives up then: the rows are safe, and the reconciler
# (or an expiry) does the rest; nothing waits on a stuck Redis.
REDIS_ANSWER_TIMEOUT = 2.0


def serialize(obj: dict[str, Any]) -> bytes:
    return json.dumps(obj, separators=(",", ":"), default=str).encode()


def deserialize(data: bytes) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(data)
    return loaded


class EmbeddedArqRedis(ArqRedis):
    """ArqRedis over an in-process fakeredis server."""

    async def info(self, section: str | None = None, *args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"redis_version": "fakeredis (embedded)", "used_memory_human": "?", "connected_clients": 1}


_log_redis_info = arq.worker.log_redis_info


async def _log_redis_info_or_skip(redis: Any, log_func: Any) -> None:
    # fakeredis does not implement INFO, which arq's worker sends at start only to log the
    # server's version and memory; skip it for the embedded server, keep it for real Redis.
    if isinstance(redis, EmbeddedArqRedis):
        log_func("redis_version=fakeredis (embedded, in-process)")
        return
    await _log_redis_info(redis, log_func)


arq.worker.log_redis_info = _log_redis_info_or_skip


def embedded_pool(server: fakeredis.FakeServer, queue_name: str) -> ArqRedis:
    pool = ConnectionPool(connection_class=fakeredis.FakeAsyncRedisConnection, server=server)
    return EmbeddedArqRedis(
        connection_pool=pool,
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=queue_name,
    )


async def redis_pool(url: str, queue_name: str) -> ArqRedis:
    return await create_pool(
        RedisSettings.from_dsn(url),
        job_serializer=serialize,
        job_deserializer=deserialize,
        default_queue_name=queue_name,
    )


# What arq's enqueue_job does for one job (skip an id whose job or result key exists; store the
# job with its expiry; add it to the queue), for many jobs, atomically. With an ``again`` prefix
# (ARGV[3], else empty), a job skipped because arq still holds it gets a mark: its run, once it
# ends, is asked for again (``Queue.take_again``), so a wake-up that came while it ran is not lost.
ENQUEUE_MANY = """
local queue, job_prefix, result_prefix, again_prefix = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local expires_ms, score = ARGV[4], ARGV[5]
local added = 0
for i = 6, #ARGV, 2 do
  local id = ARGV[i]
  if redis.call('EXISTS', job_prefix .. id, result_prefix .. id) == 0 then
    redis.call('PSETEX', job_prefix .. id, expires_ms, ARGV[i + 1])
    redis.call('ZADD', queue, score, id)
    added = added + 1
  elseif again_prefix ~= '' then
    redis.call('SET', again_prefix .. id, '1', 'PX', expires_ms)
  end
end
return added
"""
AGAIN_PREFIX = "adminlink:again:"


class Queue:
    """Hands committed job rows to arq. The arq job id is the jobs-table id, so enqueueing the
    same job twice is harmless; the row, not arq, is the durable record."""

    def __init__(self, redis: ArqRedis, queue_name: str) -> None:
        self.redis = redis
        self.queue_name = queue_name
        self._enqueue_many = redis.register_script(ENQUEUE_MANY)  # sent once, then run by its hash

    async def enqueue(self, function: str, job_id: str, defer_by: float | None = None) -> bool:
        job = await self.redis.enqueue_job(
            function, job_id, _job_id=job_id, _queue_name=self.queue_name, _defer_by=defer_by
        )
        return job is not None

    async def enqueue_many(self, function: str, job_ids: list[str]) -> int:
        """Several jobs at once, as ``enqueue`` would each (an id arq still knows is skipped), in
        one round trip to Redis instead of three per job. Answers how many were new to arq."""
        return await self._enqueue(function, [(job_id, (job_id,)) for job_id in job_ids], again="")

    async def wake(self, function: str, jobs: Sequence[tuple[str, tuple[str, ...]]]) -> int:
        """Jobs of fixed ids, as (id, arguments), that collapse: a job arq holds already (queued
        or running) is not enqueued again, but runs again once it ends (``take_again``)."""
        return await self._enqueue(function, jobs, again=AGAIN_PREFIX)

    async def take_again(self, job_id: str) -> bool:
        """Whether a wake-up came for the job while arq held it (the mark is taken)."""
        return bool(await self.redis.getdel(AGAIN_PREFIX + job_id))

    async def _enqueue(self, function: str, jobs: Sequence[tuple[str, tuple[str, ...]]], again: str) -> int:
        if not jobs:
            return 0
        enqueued_at = timestamp_ms()
        args: list[str | bytes | int] = [job_key_prefix, result_key_prefix, again, self.redis.expires_extra_ms,
                                         enqueued_at]
        for job_id, job_args in jobs:
            args += [job_id, serialize_job(function, job_args, {}, None, enqueued_at, serializer=serialize)]
        return int(await self._enqueue_many(keys=[self.queue_name], args=args))

    async def enqueue_rows(self, jobs: list[tuple[str, str]]) -> None:
        """Committed job rows, as (function, job id), with one script call per function."""
        for function in dict.fromkeys(function for function, _ in jobs):  # in order, once each
            await self.enqueue_many(function, [job_id for f, job_id in jobs if f == function])
