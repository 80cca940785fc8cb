"""Portal sessions: who is signed in, and signing out. A session is refused as soon as its
identity's auth epoch has moved (admin role given or removed, suspension, lock, deletion)."""

from __future__ import annotations

from aiohttp import web

from service.adapters.sessions import Session
from service.domain.commands import Actor
from service.domain.model import Admin, Role, User
from service.http.context import services_of
from service.http.errors import ApiError

routes = web.RouteTableDef()
COOKIE = "adminlink_session"  # the admin portal's session
USER_COOKIE = "adminlink_user_session"  # the user portal's: a browser can hold both at once
PORTAL_COOKIES = {"admin_portal": COOKIE, "user_portal": USER_COOKIE}


def bearer_token(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip() or None
    return None


def session_token(request: web.Request, portal: str | None = None) -> str | None:
    """The bearer token, else the cookie of ``portal`` (without one: the admin portal's, then the
    user portal's)."""
    token = bearer_token(request)
    if token:
        return token
    if portal is not None:
        return request.cookies.get(PORTAL_COOKIES[portal])
    return request.cookies.get(COOKIE) or request.cookies.get(USER_COOKIE)


def requested_portal(request: web.Request) -> str | None:
    portal = request.query.get("portal")
    if portal is not None and portal not in PORTAL_COOKIES:
        raise ApiError(400, "invalid_query", "portal must be admin_portal or user_portal")
    return portal


def _ended() -> ApiError:
    return ApiError(401, "session_ended", "this session has ended; sign in again")


async def current_session(request: web.Request, portal: str | None = None) -> tuple[str, Session, Admin | User]:
    token = session_token(request, portal)
    if not token:
        raise ApiError(401, "not_signed_in", "no session")
    services = services_of(request)
    session = await services.sessions.get(token)
    if session is None:
        raise _ended()
    if portal is not None and session.portal != portal:
        raise ApiError(401, "not_signed_in", f"this needs a {portal.replace('_', ' ')} session")
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
    _, session, identity = await current_session(request, requested_portal(request))
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
    """Closes the bearer token's session, or the portal cookies' (only ``?portal=``'s if given)."""
    portal = requested_portal(request)
    cookies = [PORTAL_COOKIES[portal]] if portal else list(PORTAL_COOKIES.values())
    bearer = bearer_token(request)
    tokens = [bearer] if bearer else [request.cookies.get(name) for name in cookies]
    for token in tokens:
        if token:
            await services_of(request).sessions.close(token)
    response = web.Response(status=204)
    for name in cookies:
        response.del_cookie(name, path="/")
    return response
