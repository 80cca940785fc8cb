"""``Idempotency-Key``: a retried mutating request gets the first answer and is applied once.

The key is reserved (committed) before the request runs, so a concurrent retry is told the first
is still running instead of applying twice. A key reused for a different request is refused.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.exc import IntegrityError

from service.adapters.orm import idempotency_keys as table
from service.api.context import ACTOR, actor_of, services_of
from service.api.errors import ApiError, status_for, to_response
from service.domain.errors import DomainError
from service.domain.model import now

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
        seen = (await session.execute(sa.select(table).where(*where))).one()
    if seen.request_fingerprint != fingerprint:
        raise ApiError(422, "idempotency_key_reused", "this Idempotency-Key was used for another request")
    if seen.status_code is None:
        raise ApiError(409, "idempotency_in_progress", "a request with this Idempotency-Key is still running")
    replayed = {"Idempotent-Replayed": "true"}
    if seen.response is None:  # e.g. 204 No Content
        return web.Response(status=seen.status_code, headers=replayed)
    return web.json_response(seen.response, status=seen.status_code, headers=replayed)


async def _remember(request: web.Request, where: Where, response: web.StreamResponse) -> None:
    if not isinstance(response, web.Response) or response.status >= 500:
        await _forget(request, where)
        return
    body = response.body if isinstance(response.body, bytes) else b""
    payload = json.loads(body) if body and response.content_type == "application/json" else None
    async with services_of(request).session_factory() as session, session.begin():
        await session.execute(sa.update(table).where(*where).values(status_code=response.status, response=payload))


async def _forget(request: web.Request, where: Where) -> None:
    async with services_of(request).session_factory() as session, session.begin():
        await session.execute(sa.delete(table).where(*where))
