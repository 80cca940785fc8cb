"""Portal sessions: who is signed in, and signing out. A session is refused as soon as its
identity's auth epoch has moved (admin role given or removed, suspension, lock, deletion)."""

from __future__ import annotations

from aiohttp import web

from service.adapters.sessions import Session
from service.api.context import services_of
from service.api.errors import ApiError
from service.domain.commands import Actor
from service.domain.model import Admin, Role, User

routes = web.RouteTableDef()
COOKIE = "adminlink_session"


def session_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return request.cookies.get(COOKIE)


def _ended() -> ApiError:
    return ApiError(401, "session_ended", "this session has ended; sign in again")


async def current_session(request: web.Request) -> tuple[str, Session, Admin | User]:
    token = session_token(request)
    if not token:
        raise ApiError(401, "not_signed_in", "no session")
    services = services_of(request)
    session = await services.sessions.get(token)
    if session is None:
        raise _ended()
    system = Actor(session.organization_id, "session", "system", Role.READ_ONLY)
    async with services.uow(system) as uow:
        identity: Admin | User | None
        if session.kind == "admin":
            identity = await uow.admins.get(session.organization_id, session.identity_id)
            linked = (
                await uow.users.get(session.organization_id, identity.linked_user_id)
                if identity is not None and identity.linked_user_id else None
            )
            if identity is not None and not identity.can_sign_in(linked):
                identity = None
        else:
            identity = await uow.users.get(session.organization_id, session.identity_id)
            if identity is not None and not identity.can_sign_in():
                identity = None
    if identity is None or identity.auth_epoch != session.epoch:
        raise _ended()
    return token, session, identity


@routes.get("/auth/session")
async def get_session(request: web.Request) -> web.Response:
    _, session, identity = await current_session(request)
    body = {
        "kind": session.kind,
        "id": identity.id,
        "email": identity.email,
        "organization_id": session.organization_id,
        "portal": session.portal,
        "factor": session.factor,
        "created": session.created_at,
    }
    if isinstance(identity, Admin):
        body["role"] = identity.role.value
        body["linked_user_id"] = identity.linked_user_id
    return web.json_response(body)


@routes.post("/auth/logout")
async def logout(request: web.Request) -> web.Response:
    token = session_token(request)
    if token:
        await services_of(request).sessions.close(token)
    response = web.Response(status=204)
    response.del_cookie(COOKIE, path="/")
    return response
