"""Portal sessions in Redis. The key is a hash of the token, so a Redis dump holds no live
session. Whether a session is still valid is decided against the identity's auth epoch in the
database on every request; deleting keys here is housekeeping."""

from __future__ import annotations

import json
import secrets
from dataclasses import asdict, dataclass
from typing import Any

from redis.asyncio import Redis

from service.adapters.crypto import token_hash

PREFIX = "adminlink:session:"


@dataclass(frozen=True)
class Session:
    kind: str  # admin | user: the identity the session belongs to
    identity_id: str
    organization_id: str
    epoch: int
    portal: str  # admin_portal | user_portal
    factor: str | None
    created_at: str

    def to_json(self) -> str:
        return json.dumps(asdict(self))


class SessionStore:
    def __init__(self, redis: Redis, idle_seconds: int) -> None:
        self.redis = redis
        self.idle_seconds = idle_seconds

    @staticmethod
    def _index(kind: str, identity_id: str) -> str:
        return f"{PREFIX}index:{kind}:{identity_id}"

    async def open(self, session: Session) -> str:
        token = secrets.token_urlsafe(32)
        key = PREFIX + token_hash(token)
        index = self._index(session.kind, session.identity_id)
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, session.to_json(), ex=self.idle_seconds)
            pipe.sadd(index, key)
            pipe.expire(index, self.idle_seconds * 24)
            await pipe.execute()
        return token

    async def get(self, token: str) -> Session | None:
        key = PREFIX + token_hash(token)
        raw = await self.redis.get(key)
        if raw is None:
            return None
        await self.redis.expire(key, self.idle_seconds)  # idle timeout slides with use
        data: dict[str, Any] = json.loads(raw)
        return Session(**data)

    async def close(self, token: str) -> None:
        await self.redis.delete(PREFIX + token_hash(token))

    async def end_all(self, kind: str, identity_id: str) -> int:
        index = self._index(kind, identity_id)
        keys: set[bytes] = await self.redis.smembers(index)  # type: ignore[misc]
        if keys:
            await self.redis.delete(*keys)
        await self.redis.delete(index)
        return len(keys)
