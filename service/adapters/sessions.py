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

# The identity's session keys and their index, deleted in one round trip.
# Each KEYS[j] is an identity's index of session keys: the keys and the index are deleted.
END_ALL = """
local ended = 0
for j = 1, #KEYS do
  local keys = redis.call('SMEMBERS', KEYS[j])
  for i = 1, #keys, 500 do
    redis.call('DEL', unpack(keys, i, math.min(i + 499, #keys)))
  end
  redis.call('DEL', KEYS[j])
  ended = ended + #keys
end
return ended
"""


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
        self._end_all = redis.register_script(END_ALL)

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
        """Deletes the identity's session keys; answers how many there were."""
        return await self.end_many([(kind, identity_id)])

    async def end_many(self, identities: list[tuple[str, str]]) -> int:
        """``end_all`` for each (kind, identity id), in one round trip."""
        return int(await self._end_all(keys=[self._index(kind, identity_id) for kind, identity_id in identities]))
