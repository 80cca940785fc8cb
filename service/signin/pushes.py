"""Push challenges in Redis: at most one pending push per user at a time, valid for the push TTL
(60 s by default); the device's first signed decision wins and cannot be changed.

Keys: ``push:{id}`` the request (kept a little past its expiry so the sign-in can learn that it
expired), ``push:decision:{id}`` the decision (SET NX: first one wins), ``push:pending:{org}:{user}``
the user's single pending slot (SET NX with the TTL).
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass

from redis.asyncio import Redis

from service.domain.errors import Conflict

PREFIX = "adminlink:signin:push:"
KEEP_AFTER_EXPIRY = 300

PENDING, APPROVED, DENIED, EXPIRED = "pending", "approved", "denied", "expired"


@dataclass
class PushRequest:
    id: str
    organization_id: str
    user_id: str
    challenge_key: str
    nonce: str
    created_at: float
    expires_at: float
    portal: str
    client_ip: str | None
    useragent: str | None


class PushStore:
    def __init__(self, redis: Redis, ttl_seconds: int) -> None:
        self.redis = redis
        self.ttl = ttl_seconds

    def _slot(self, org_id: str, user_id: str) -> str:
        return f"{PREFIX}pending:{org_id}:{user_id}"

    async def send(self, org_id: str, user_id: str, challenge_key: str, portal: str, client_ip: str | None,
                   useragent: str | None) -> PushRequest:
        """A new push for this sign-in, or the one it already has; refused while another sign-in's
        push is pending for the same user."""
        push_id = secrets.token_urlsafe(18)
        if not await self.redis.set(self._slot(org_id, user_id), push_id, nx=True, ex=self.ttl):
            existing = await self.pending_for(org_id, user_id)
            if existing is not None and existing.challenge_key == challenge_key:
                return existing
            raise Conflict("push_already_pending",
                           "a push is already waiting on this user's device; answer it or wait a minute")
        at = time.time()
        push = PushRequest(push_id, org_id, user_id, challenge_key, secrets.token_urlsafe(24), at,
                           at + self.ttl, portal, client_ip, useragent)
        await self.redis.set(PREFIX + push_id, json.dumps(asdict(push)), ex=self.ttl + KEEP_AFTER_EXPIRY)
        return push

    async def get(self, push_id: str) -> PushRequest | None:
        raw = await self.redis.get(PREFIX + push_id)
        return PushRequest(**json.loads(raw)) if raw is not None else None

    async def pending_for(self, org_id: str, user_id: str) -> PushRequest | None:
        push_id = await self.redis.get(self._slot(org_id, user_id))
        if push_id is None:
            return None
        push = await self.get(push_id.decode() if isinstance(push_id, bytes) else push_id)
        if push is None or await self.status(push) != PENDING:
            return None
        return push

    async def status(self, push: PushRequest) -> str:
        decision = await self.redis.get(PREFIX + "decision:" + push.id)
        if decision is not None:
            return APPROVED if decision in (b"approve", "approve") else DENIED
        return EXPIRED if time.time() >= push.expires_at else PENDING

    async def decide(self, push: PushRequest, decision: str) -> bool:
        """Records the device's decision; False if one was already recorded."""
        recorded = await self.redis.set(PREFIX + "decision:" + push.id, decision, nx=True,
                                        ex=self.ttl + KEEP_AFTER_EXPIRY)
        if recorded:
            await self._free_slot(push)
        return bool(recorded)

    async def finish(self, push: PushRequest) -> None:
        await self._free_slot(push)
        await self.redis.delete(PREFIX + push.id, PREFIX + "decision:" + push.id)

    async def _free_slot(self, push: PushRequest) -> None:
        # Only this push's slot: a newer push of the same user keeps its own.
        slot = self._slot(push.organization_id, push.user_id)
        current = await self.redis.get(slot)
        if current in (push.id, push.id.encode()):
            await self.redis.delete(slot)
