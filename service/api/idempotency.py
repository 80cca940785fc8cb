"""``Idempotency-Key``: a retried mutating request gets the first answer and is applied once.

The key is reserved (committed) before the request runs, so a concurrent retry is told the first
is still running instead of applying twice. A key reused for a different request is refused.
The answer is kept sealed with the service's secret box (answers show secrets once: API keys,
tokens, TOTP seeds) and replayed for 24 hours; after that the key is a new one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from service.adapters.crypto import SecretBox
from service.adapters.orm import IDEMPOTENCY_KEY_LIFETIME
from service.adapters.orm import idempotency_keys as table
from service.domain.errors import DomainError
from service.domain.model import now
from service.http.context import ACTOR, actor_of, services_of
from service.http.errors import ApiError, status_for, to_response

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Where = tuple[sa.ColumnElement[bool], ...]


@web.middleware
async def idempotency_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    key = request.headers.get("Idempotency-Key")
    if request.method not in MUTATING or not key or ACTOR not in request or _unrouted(request):
        return await handler(request)
    if len(key) > 200:
        raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key is longer than 200 characters")
    actor = actor_of(request)
    fingerprint = hashlib.sha256(
        f"{request.method} {request.path_qs} {actor.id}\n".encode() + await request.read()
    ).hexdigest()
    where = (table.c.organization_id == actor.organization_id, table.c.key == key)
    replay = await _reserve(request, where, key, fingerprint)
    if replay is not None:
        return replay
    try:
        response = await handler(request)
    except DomainError as error:
        if status_for(error) >= 500:
            await _forget(request, where)
            raise
        response = to_response(error)
    except BaseException:
        await _forget(request, where)  # nothing to replay: a retry runs again
        raise
    await _remember(request, where, response)
    return response


def _unrouted(request: web.Request) -> bool:
    """No route takes this method on this path (405, 404): there is nothing to apply or replay, and
    the answer must be the router's, whatever the key was used for before."""
    return request.match_info.http_exception is not None


async def _reserve(request: web.Request, where: Where, key: str, fingerprint: str) -> web.Response | None:
    actor = actor_of(request)
    async with services_of(request).session_factory() as session:
        try:
            async with session.begin():
                await session.execute(table.insert().values(
                    organization_id=actor.organization_id, key=key, request_fingerprint=fingerprint,
                    created_at=now()))
            return None
        except IntegrityError:
            pass
        if await _renew_expired(session, where, fingerprint):
            return None
        seen = (await session.execute(sa.select(table).where(*where))).one()
    if seen.request_fingerprint != fingerprint:
        raise ApiError(422, "idempotency_key_reused", "this Idempotency-Key was used for another request")
    if seen.status_code is None:
        raise ApiError(409, "idempotency_in_progress", "a request with this Idempotency-Key is still running")
    replayed = {"Idempotent-Replayed": "true"}
    if seen.response is None:  # e.g. 204 No Content
        return web.Response(status=seen.status_code, headers=replayed)
    if isinstance(seen.response, str):
        body = _opened_body(services_of(request).box, seen.response)
        return web.Response(text=body, content_type="application/json", status=seen.status_code, headers=replayed)
    # Kept before answers were sealed: replayed as it is until the cleanup job deletes it.
    return web.json_response(seen.response, status=seen.status_code, headers=replayed)


async def _renew_expired(session: AsyncSession, where: Where, fingerprint: str) -> bool:
    """Takes over a key whose answer has expired, as if it were new. One conditional update:
    of two concurrent retries, only one finds the row still expired."""
    async with session.begin():
        renewed = await session.execute(
            sa.update(table).where(*where, table.c.created_at < now() - IDEMPOTENCY_KEY_LIFETIME)
            .values(request_fingerprint=fingerprint, status_code=None, response=None, created_at=now()))
    return bool(renewed.rowcount)  # type: ignore[attr-defined]


async def _remember(request: web.Request, where: Where, response: web.StreamResponse) -> None:
    if not isinstance(response, web.Response) or response.status >= 500:
        await _forget(request, where)
        return
    sealed = _sealed_body(services_of(request).box, response)
    async with services_of(request).session_factory() as session, session.begin():
        await session.execute(sa.update(table).where(*where).values(status_code=response.status, response=sealed))


def _sealed_body(box: SecretBox, response: web.Response) -> str | None:
    """A JSON answer's body, sealed: every one is, so nothing depends on knowing which carry a
    secret. Other answers (204 No Content) are replayed without a body."""
    body = response.body if isinstance(response.body, bytes) else b""
    if not body or response.content_type != "application/json":
        return None
    return box.seal(body.decode())


def _opened_body(box: SecretBox, sealed: str) -> str:
    """The stored answer, or a refusal when it was sealed under another secret key: running the
    request again could apply it twice, and the first answer cannot be shown."""
    try:
        return box.open(sealed)
    except ValueError as exc:
        raise ApiError(409, "idempotency_answer_unreadable", "the first answer to this Idempotency-Key was "
                       "stored under another ADMINLINK_SECRET_KEY and cannot be replayed; use a new key") from exc


async def _forget(request: web.Request, where: Where) -> None:
    async with services_of(request).session_factory() as session, session.begin():
        await session.execute(sa.delete(table).where(*where))
