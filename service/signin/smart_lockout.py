"""Smart lockout: failed sign-ins counted apart for familiar and unfamiliar clients, and answers
to failures that wait longer as failures pile up (docs/signin.md, "Familiar and unfamiliar
clients").

Two lanes of consecutive failures, in Redis:

- the *familiar* lane of an identity: clients that carry its known-device cookie. Their failures
  also count toward the user's lockout in the database (``lockout.count_failure``), which holds
  until an administrator unlocks the user, as the product spec says; the lane here only paces them;
- the *unfamiliar* lane of an email: every other client. At ``threshold`` failures such clients
  are refused (``unfamiliar_client_blocked``) until ``block_seconds`` have passed since the last
  counted failure, without the password even being checked, so the block is no oracle. The lane
  is keyed by the email of the account found, whether its username or its email was typed, and
  whatever organization was asked for; when no account matches, by what was typed, so the block
  tells nothing about which usernames or emails exist. The user is never locked by it and familiar
  clients never see it.

After the n-th consecutive failure of a lane the answer waits ``delay_after(n)`` (asyncio.sleep:
the event loop keeps serving) and the lane is closed until then: an attempt that arrives earlier,
say a parallel one, is refused at once with 429 ``rate_limited`` and Retry-After instead of being
checked, so concurrency gains an attacker nothing and costs the server no password hash.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass

from redis.asyncio import Redis

from service.adapters.crypto import token_hash
from service.domain.model import normalise_email
from service.signin.errors import RateLimited, UnfamiliarBlocked

PREFIX = "adminlink:signin:failures:"
FAMILIAR = "familiar"
UNFAMILIAR = "unfamiliar"
# A client that waited for its answer is not refused for the clocks' jitter.
GRACE_SECONDS = 0.1
# Answers held back at once, at most, in one process: beyond it they go out at once (the lane's
# not-before time still holds the next attempt back), so waiting answers cannot pile up.
MAX_WAITING = 200


@dataclass(frozen=True)
class Lane:
    kind: str  # FAMILIAR | UNFAMILIAR
    subject: str  # familiar: the identity (known_devices.subject); unfamiliar: the email

    @property
    def familiar(self) -> bool:
        return self.kind == FAMILIAR


def familiar(subject: str) -> Lane:
    return Lane(FAMILIAR, subject)


def unfamiliar(email: str) -> Lane:
    return Lane(UNFAMILIAR, normalise_email(email))


def delay_after(failures: int, base: float, cap: float) -> float:
    """How long the answer to the ``failures``-th consecutive failure waits: base, 2 base, 4 base,
    ... and never more than ``cap``. No failure (or base 0) waits nothing."""
    if failures < 1 or base <= 0:
        return 0.0
    return min(cap, base * 2 ** min(failures - 1, 64))


class SmartLockout:
    def __init__(self, redis: Redis, threshold: int, block_seconds: int, delay_base: float,
                 delay_cap: float) -> None:
        self.redis = redis
        self.threshold = threshold
        self.block_seconds = block_seconds
        self.delay_base = delay_base
        self.delay_cap = delay_cap

    @staticmethod
    def _key(lane: Lane) -> str:
        return f"{PREFIX}{lane.kind}:{token_hash(lane.subject)}"

    async def _read(self, key: str) -> tuple[int, float, int]:
        """The lane's consecutive failures, the time of the last one and its seconds to live (one round trip)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.hmget(key, ["count", "last"])
            pipe.ttl(key)
            (count, last), ttl = await pipe.execute()
        return int(count or 0), float(last or 0), int(ttl)

    async def failures(self, lane: Lane) -> int:
        return (await self._read(self._key(lane)))[0]

    async def ensure_open(self, lane: Lane) -> None:
        """Refuses an attempt in a blocked unfamiliar lane, or before the last failure's delay is over."""
        count, last, ttl = await self._read(self._key(lane))
        if not lane.familiar and count >= self.threshold:
            raise UnfamiliarBlocked(max(1, ttl))
        wait = last + delay_after(count, self.delay_base, self.delay_cap) - time.time()
        if wait > GRACE_SECONDS:
            raise RateLimited(max(1, math.ceil(wait)))

    async def count(self, lane: Lane) -> float:
        """One more consecutive failure in ``lane``; returns how long its answer must wait."""
        key = self._key(lane)
        # One transaction: the lane is never written without its expiry (a ``clear`` in between
        # would otherwise leave a key that is kept forever), and its not-before time is derived
        # from the last failure's time and the count, not stored.
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.hincrby(key, "count", 1)
            pipe.hset(key, "last", repr(time.time()))
            pipe.expire(key, self.block_seconds)
            count, _, _ = await pipe.execute()
        return delay_after(int(count), self.delay_base, self.delay_cap)

    async def clear(self, lane: Lane) -> None:
        """A completed sign-in: the lane's failures are no longer consecutive."""
        await self.redis.delete(self._key(lane))


_waiting = 0


async def hold_back(delay: float) -> None:
    """Waits ``delay`` before a failure is answered, without blocking the event loop."""
    global _waiting
    if delay <= 0 or _waiting >= MAX_WAITING:
        return
    _waiting += 1
    try:
        await asyncio.sleep(delay)
    finally:
        _waiting -= 1
