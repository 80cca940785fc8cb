"""Rate limits on sign-in endpoints, per account and per client address, in Redis.

Sliding windows: each key keeps the times of its accepted attempts (a sorted set) for one
window. An attempt over the limit is refused and not kept, so a client that keeps hammering is
let through again at the pace the limit allows, and no window boundary ever allows a double burst.
The account key of a password step is the email of the account found (so its username and its
email share one limit), or what the client typed when no account matches; of a factor step, the
account behind the challenge. An identifier without an account is limited the same way, so the
limit itself tells nothing about existence.
"""

from __future__ import annotations

import math
import secrets
import time

from redis.asyncio import Redis

from service.adapters.crypto import token_hash
from service.signin.errors import RateLimited

PREFIX = "adminlink:signin:rate:"


class Throttle:
    def __init__(self, redis: Redis, window_seconds: int, per_account: int, per_ip: int) -> None:
        self.redis = redis
        self.window = window_seconds
        self.limits = {"account": per_account, "ip": per_ip}

    async def hit(self, *, ip: str | None, account: str | None) -> None:
        """Counts one attempt; refuses it once either the address or the account is over its limit."""
        for scope, value in (("ip", ip), ("account", account)):
            if value:
                await self._count(scope, value)

    async def _count(self, scope: str, value: str) -> None:
        key = f"{PREFIX}{scope}:{token_hash(value)}"
        now = time.time()
        member = f"{now:.6f}:{secrets.token_hex(4)}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zremrangebyscore(key, 0, now - self.window)
            pipe.zadd(key, {member: now})
            pipe.zcard(key)
            pipe.expire(key, self.window + 1)
            _, _, count, _ = await pipe.execute()
        if int(count) <= self.limits[scope]:
            return
        await self.redis.zrem(key, member)
        oldest = await self.redis.zrange(key, 0, 0, withscores=True)
        since = float(oldest[0][1]) if oldest else now
        raise RateLimited(max(1, math.ceil(since + self.window - now)))


def account_key(email: str, organization_id: str | None) -> str:
    return f"email:{organization_id or '*'}:{email.strip().lower()}"


def user_key(organization_id: str, user_id: str) -> str:
    return f"user:{organization_id}:{user_id}"
