"""Short-lived sign-in state in Redis: MFA challenges between the password and the factor, and
the small pieces of pending enrollment (a TOTP secret awaiting its first code, a WebAuthn
registration challenge, a push enrollment token).

Keys are hashes of the tokens handed to clients, so a Redis dump holds nothing a client could
replay. A challenge is completed once: ``claim`` deletes it, and only the caller that deleted it
may open a session.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from redis.asyncio import Redis

from service.adapters.crypto import token_hash

PREFIX = "adminlink:signin:"
MAX_FAILURES = 5  # wrong factors on one challenge before the password must be given again

ADMIN_LOGIN = "admin_login"
USER_LOGIN = "user_login"
STEP_UP = "step_up"
GO = "go"


@dataclass
class Challenge:
    purpose: str  # admin_login | user_login | step_up | go
    organization_id: str
    portal: str  # the portal the session will open: admin_portal | user_portal
    factors: list[str]
    client: str  # web (cookie) | mobile (bearer token)
    client_ip: str | None = None
    useragent: str | None = None
    user_id: str | None = None
    admin_id: str | None = None
    user_epoch: int | None = None
    admin_epoch: int | None = None
    user_session: str | None = None  # step-up: hash of the user-portal session it belongs to
    started_factor: str | None = None
    webauthn_challenge: str | None = None
    push_id: str | None = None
    duo_state: str | None = None
    duo_nonce: str | None = None
    failures: int = 0
    expires_at: float = field(default_factory=time.time)

    @property
    def expires_in(self) -> int:
        return max(0, int(self.expires_at - time.time()))


class ChallengeStore:
    def __init__(self, redis: Redis, ttl_seconds: int) -> None:
        self.redis = redis
        self.ttl = ttl_seconds

    @staticmethod
    def key_of(token: str) -> str:
        return token_hash(token)

    async def create(self, challenge: Challenge) -> str:
        token = secrets.token_urlsafe(32)
        challenge.expires_at = time.time() + self.ttl
        await self.redis.set(PREFIX + "challenge:" + self.key_of(token), json.dumps(asdict(challenge)),
                             ex=self.ttl)
        return token

    async def get(self, key: str) -> Challenge | None:
        raw = await self.redis.get(PREFIX + "challenge:" + key)
        if raw is None:
            return None
        return Challenge(**json.loads(raw))

    async def save(self, key: str, challenge: Challenge) -> None:
        """Keeps the challenge's original expiry: starting a factor never extends a sign-in."""
        await self.redis.set(PREFIX + "challenge:" + key, json.dumps(asdict(challenge)), keepttl=True, xx=True)

    async def claim(self, key: str) -> bool:
        return int(await self.redis.delete(PREFIX + "challenge:" + key)) == 1

    async def link_duo_state(self, state: str, key: str) -> None:
        await self.redis.set(PREFIX + "duo-state:" + token_hash(state), key, ex=self.ttl)

    async def key_for_duo_state(self, state: str) -> str | None:
        raw = await self.redis.get(PREFIX + "duo-state:" + token_hash(state))
        return raw.decode() if isinstance(raw, bytes) else raw


class PendingStore:
    """Pending enrollment steps, keyed by purpose and a token or session hash."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def put(self, purpose: str, handle: str, data: dict[str, Any], ttl: int) -> None:
        await self.redis.set(f"{PREFIX}pending:{purpose}:{token_hash(handle)}", json.dumps(data), ex=ttl)

    async def get(self, purpose: str, handle: str) -> dict[str, Any] | None:
        raw = await self.redis.get(f"{PREFIX}pending:{purpose}:{token_hash(handle)}")
        return json.loads(raw) if raw is not None else None

    async def take(self, purpose: str, handle: str) -> dict[str, Any] | None:
        """Reads and deletes at once: a pending step is used at most once."""
        raw = await self.redis.getdel(f"{PREFIX}pending:{purpose}:{token_hash(handle)}")
        return json.loads(raw) if raw is not None else None
