"""``adminlink worker --check``: is a worker alive on this queue?

A running arq worker writes its queue's health-check key (``<queue>:health-check``) every
``health_check_interval`` seconds (30 s, workers/settings.py), with an expiry of that interval + 1 s,
and deletes it when it stops. So the key is there only while a worker has polled the queue within
the last interval: there, the check passes (exit 0); gone, or Redis not answering, it fails (exit 1).

The key belongs to the queue, not to one process: with several workers on one queue, it is fresh
while any of them is.

Kept to light imports (no web app, no database): a container healthcheck runs it every 30 s, as
``python -m workers.health``; ``adminlink worker --check`` runs the same check.
"""

from __future__ import annotations

import asyncio
import sys

from arq.constants import health_check_key_suffix
from redis.asyncio import Redis
from redis.exceptions import RedisError

from service import config


def health_check_key(queue_name: str) -> str:
    """The key arq's Worker writes for ``queue_name`` (its default ``health_check_key``)."""
    return queue_name + health_check_key_suffix


async def worker_health(redis: Redis, queue_name: str) -> str | None:
    """What the freshest worker on ``queue_name`` last reported, or None if none is alive."""
    value = await redis.get(health_check_key(queue_name))
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


async def check(settings: config.Settings) -> int:
    """Prints what was found; returns the exit status (0: a worker is alive on the queue)."""
    if settings.redis_url is None:
        print("no ADMINLINK_REDIS_URL: the embedded worker of `adminlink serve` has no health key to check",
              file=sys.stderr)
        return 1
    redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=5)
    try:
        report = await worker_health(redis, settings.queue_name)
    except (RedisError, OSError) as exc:
        print(f"unhealthy: Redis did not answer ({type(exc).__name__})", file=sys.stderr)
        return 1
    finally:
        await redis.aclose()
    if report is None:
        print(f"unhealthy: no worker has reported on {settings.queue_name} in the last health-check interval",
              file=sys.stderr)
        return 1
    print(f"healthy: {report}")
    return 0


def main() -> int:
    try:
        settings = config.load()
    except config.ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    return asyncio.run(check(settings))


if __name__ == "__main__":
    sys.exit(main())
