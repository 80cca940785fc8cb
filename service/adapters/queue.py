"""The arq queue: Redis (or the embedded in-process fakeredis) and a JSON job serializer.

Jobs carry only JSON, never pickle: with pickle, anyone who can write to Redis runs code on
the workers.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import arq.worker
import fakeredis
from arq.connections import ArqRedis, RedisSettings, create_pool
from redis.asyncio import ConnectionPool

log = logging.getLogger(__name__)


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


class Queue:
    """Hands committed job rows to arq. The arq job id is the jobs-table id, so enqueueing the
    same job twice is harmless; the row, not arq, is the durable record."""

    def __init__(self, redis: ArqRedis, queue_name: str) -> None:
        self.redis = redis
        self.queue_name = queue_name

    async def enqueue(self, function: str, job_id: str, defer_by: float | None = None) -> bool:
        job = await self.redis.enqueue_job(
            function, job_id, _job_id=job_id, _queue_name=self.queue_name, _defer_by=defer_by
        )
        return job is not None
