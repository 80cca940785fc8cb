"""``Idempotency-Key``: a retried mutating request gets the first answer and is applied once.

The key is reserved (committed) before the request runs, so a concurrent retry is told the first
is still running instead of applying twice. A key reused for a different request is refused.
The answer is kept sealed with the service's secret box (answers show secrets once: API keys,
tokens, TOTP seeds) and replayed for 24 hours; after that the key is a new one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable

from aiohttp import web

from service.adapters.crypto import SecretBox
from service.domain.errors import DomainError
from service.http.context import ACTOR, actor_of, services_of
from service.http.errors import ApiError, status_for, to_response

MUTATING = {"POST", "PUT", "PATCH", "DELETE"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


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
    replay = await _reserve(request, actor.organization_id, key, fingerprint)
    if replay is not None:
        return replay
    try:
        response = await handler(request)
    except DomainError as error:
        if status_for(error) >= 500:
            await _forget(request, actor.organization_id, key)
            raise
        response = to_response(error)
    except BaseException:
        await _forget(request, actor.organization_id, key)  # nothing to replay: a retry runs again
        raise
    await _remember(request, actor.organization_id, key, response)
    return response


def _unrouted(request: web.Request) -> bool:
    """No route takes this method on this path (405, 404): there is nothing to apply or replay, and
    the answer must be the router's, whatever the key was used for before."""
    return request.match_info.http_exception is not None


async def _reserve(request: web.Request, org_id: str, key: str, fingerprint: str) -> web.Response | None:
    seen = await services_of(request).idempotency_keys.reserve(org_id, key, fingerprint)
    if seen is None:
        return None
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


async def _remember(request: web.Request, org_id: str, key: str, response: web.StreamResponse) -> None:
    if not isinstance(response, web.Response) or response.status >= 500:
        await _forget(request, org_id, key)
        return
    sealed = _sealed_body(services_of(request).box, response)
    await services_of(request).idempotency_keys.remember(org_id, key, response.status, sealed)


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


async def _forget(request: web.Request, org_id: str, key: str) -> None:
    await services_of(request).idempotency_keys.forget(org_id, key)
