"""Sign-in API (JSON): admin-portal and user-portal sign-in with MFA, step-up to the admin portal,
passwordless Go, factor enrollment in the user portal, the push device's calls, password changes,
and the organization's Duo settings (management API).

Routes only translate HTTP; the flows live in ``service.signin``. Browsers get an HttpOnly,
SameSite=Lax cookie per portal; a client that sends ``"client": "mobile"`` gets a bearer token
in the answer instead. Both get the known-device cookie after a sign-in with MFA.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from service.adapters.mfa.duo import DuoGateway
from service.adapters.sessions import Session
from service.api.auth import PORTAL_COOKIES, USER_COOKIE, bearer_token, current_session
from service.domain.errors import DomainError
from service.domain.model import Admin, User
from service.http import inputs
from service.http.context import actor_of, services_of
from service.http.errors import bad_request, error_body
from service.signin import devices, duo_settings, known_devices, passwords
from service.signin.challenges import ADMIN_LOGIN, STEP_UP, USER_LOGIN
from service.signin.enrollment import Enrollment
from service.signin.errors import RateLimited, Unavailable
from service.signin.flows import MfaRequired, Pending, SignedIn, Signin
from service.signin.records import ADMIN_PORTAL, USER_PORTAL, ClientInfo
from service.signin.runner import run

routes = web.RouteTableDef()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def guarded(handler: Handler) -> Handler:
    """Rate limits answer 429 with Retry-After; an unreachable Duo answers 503."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except RateLimited as limited:
            return web.json_response(error_body(limited.code, limited.message), status=429,
                                     headers={"Retry-After": str(limited.retry_after)})
        except Unavailable as down:
            return web.json_response(error_body(down.code, down.message), status=503,
                                     headers={"Retry-After": "30"})

    return wrapped


def client_info(request: web.Request, data: dict[str, Any] | None = None) -> ClientInfo:
    kind = inputs.string(data or {}, "client", max_length=10) or ("mobile" if bearer_token(request) else "web")
    if kind not in ("web", "mobile"):
        raise bad_request("invalid_field", "client must be web or mobile")
    ip = request.remote
    if services_of(request).settings.trust_forwarded_for:
        # Behind one trusted proxy: the last address it appended is the client it saw.
        forwarded = [part.strip() for part in request.headers.get("X-Forwarded-For", "").split(",") if part.strip()]
        ip = forwarded[-1] if forwarded else ip
    return ClientInfo(ip, request.headers.get("User-Agent", "")[:500] or None, kind,
                      known_devices.device_cookies(request.cookies))


def session_body(session: Session, identity: Admin | User) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": session.kind, "id": identity.id, "email": identity.email,
        "organization_id": session.organization_id, "portal": session.portal, "factor": session.factor,
        "created": session.created_at,
    }
    if isinstance(identity, Admin):
        body["role"] = identity.role.value
        body["linked_user_id"] = identity.linked_user_id
    return body


def answer(request: web.Request, result: MfaRequired | SignedIn | Pending) -> web.Response:
    if isinstance(result, MfaRequired):
        return web.json_response({"status": "mfa_required", "challenge_id": result.challenge_id,
                                  "factors": result.factors, "expires_in": result.expires_in})
    if isinstance(result, Pending):
        return web.json_response({"status": "pending", "push_id": result.push_id, "expires_in": result.expires_in},
                                 status=202)
    body: dict[str, Any] = {"status": "signed_in", "session": session_body(result.portal_session, result.identity)}
    settings = services_of(request).settings
    if result.client == "mobile":
        body["token"] = result.token  # the admin mobile app keeps it; no session cookie
        response = web.json_response(body)
    else:
        response = web.json_response(body)
        response.set_cookie(PORTAL_COOKIES[result.portal_session.portal], result.token, httponly=True, samesite="Lax",
                            secure=settings.cookie_secure, path="/")
    if result.device_cookie is not None:  # web and mobile alike: the app keeps it in its cookie store
        name, value = result.device_cookie
        response.set_cookie(name, value, httponly=True, samesite="Lax", secure=settings.cookie_secure,
                            path=known_devices.COOKIE_PATH, max_age=settings.known_device_days * 86400)
    return response


def _signin(request: web.Request) -> Signin:
    return Signin(services_of(request))


def _proof(data: dict[str, Any]) -> dict[str, Any]:
    proof: dict[str, Any] = {}
    for name in ("code", "state", "duo_code"):
        value = inputs.string(data, name, max_length=2000)
        if value is not None:
            proof[name] = value
    if "credential" in data:
        if not isinstance(data["credential"], dict):
            raise bad_request("invalid_field", "credential must be the authenticator's answer as a JSON object")
        proof["credential"] = data["credential"]
    return proof


# --- password step -----------------------------------------------------------------------------


async def _password_step(request: web.Request, portal: str) -> web.Response:
    data = await inputs.json_body(request)
    identifier = _identifier(data)
    password = inputs.required_string(data, "password", max_length=1000)
    org_id = inputs.string(data, "organization_id", max_length=64)
    result = await _signin(request).password_step(portal, identifier, password, org_id, client_info(request, data))
    return answer(request, result)


def _identifier(data: dict[str, Any]) -> str:
    """``identifier`` (a username or an email), or ``email`` as clients sent it before; one of them."""
    if "identifier" in data and "email" in data:
        raise bad_request("invalid_field", "send identifier or email, not both")
    if "email" in data:
        return inputs.required_string(data, "email")
    if "identifier" not in data:
        raise bad_request("missing_field", "identifier (a username or an email) is required")
    return inputs.required_string(data, "identifier")


@routes.post("/auth/admin/login")
@guarded
async def admin_login(request: web.Request) -> web.StreamResponse:
    return await _password_step(request, ADMIN_PORTAL)


@routes.post("/auth/user/login")
@guarded
async def user_login(request: web.Request) -> web.StreamResponse:
    return await _password_step(request, USER_PORTAL)


# --- MFA step: start a factor, complete with it --------------------------------------------------


async def _user_session_token(request: web.Request, purpose: str) -> str | None:
    if purpose != STEP_UP:
        return None
    token, _, _ = await current_session(request, USER_PORTAL)
    return token


def _mfa_routes(prefix: str, purpose: str) -> None:
    async def start(request: web.Request) -> web.StreamResponse:
        data = await inputs.json_body(request)
        user_session = await _user_session_token(request, purpose)
        started = await _signin(request).start(
            inputs.required_string(data, "challenge_id", max_length=200), (purpose,),
            inputs.required_string(data, "factor", max_length=40), client_info(request, data), user_session)
        return web.json_response({"status": "started", **started})

    async def complete(request: web.Request) -> web.StreamResponse:
        data = await inputs.json_body(request)
        user_session = await _user_session_token(request, purpose)
        result = await _signin(request).complete(
            inputs.required_string(data, "challenge_id", max_length=200), (purpose,),
            inputs.required_string(data, "factor", max_length=40), _proof(data), client_info(request, data),
            user_session)
        return answer(request, result)

    start.__name__, complete.__name__ = f"{purpose}_start_factor", f"{purpose}_complete"
    routes.post(f"{prefix}/mfa/start")(guarded(start))
    routes.post(f"{prefix}/mfa")(guarded(complete))


_mfa_routes("/auth/admin/login", ADMIN_LOGIN)
_mfa_routes("/auth/user/login", USER_LOGIN)
_mfa_routes("/auth/user/launch-admin-portal", STEP_UP)


@routes.get("/auth/duo/callback")
@guarded
async def duo_callback(request: web.Request) -> web.StreamResponse:
    """Where Duo sends the browser back: completes the sign-in that ``state`` names. A browser
    (``Accept: text/html``) is sent on to its portal, or shown why not; other clients get JSON."""
    state, duo_code = request.query.get("state"), request.query.get("duo_code")
    if not state or not duo_code or len(state) > 1024 or len(duo_code) > 2000:
        raise bad_request("invalid_query", "state and duo_code are required")
    from service.web import duo_callback as page  # the pages import this module

    user_session = bearer_token(request) or request.cookies.get(USER_COOKIE)
    try:
        result = await _signin(request).complete_duo_callback(state, duo_code, client_info(request), user_session)
    except DomainError as refusal:
        if page.wants_page(request):  # a browser back from Duo reads a page, not JSON
            return page.refused(request, refusal)
        raise
    browser = page.signed_in(request, result) if page.wants_page(request) else None
    if browser is not None:
        raise browser
    return answer(request, result)


# --- step-up and Go ------------------------------------------------------------------------------


@routes.post("/auth/user/launch-admin-portal")
@guarded
async def launch_admin_portal(request: web.Request) -> web.StreamResponse:
    data = await inputs.json_body(request)
    token, session, user = await current_session(request, USER_PORTAL)
    assert isinstance(user, User)
    result = await _signin(request).launch_admin_portal(token, session, user, client_info(request, data))
    return answer(request, result)


@routes.post("/auth/user/go/options")
@guarded
async def go_options(request: web.Request) -> web.StreamResponse:
    data = await inputs.json_body(request)
    challenge_id, options = await _signin(request).go_options(client_info(request, data))
    return web.json_response({"challenge_id": challenge_id, "options": options})


@routes.post("/auth/user/go")
@guarded
async def go(request: web.Request) -> web.StreamResponse:
    data = await inputs.json_body(request)
    proof = _proof(data)
    if "credential" not in proof:
        raise bad_request("missing_field", "credential is required")
    result = await _signin(request).go_complete(inputs.required_string(data, "challenge_id", max_length=200),
                                                proof["credential"], client_info(request, data))
    return answer(request, result)


# --- passwords -----------------------------------------------------------------------------------


def _passwords(data: dict[str, Any]) -> tuple[str, str]:
    return (inputs.required_string(data, "old_password", max_length=1000),
            inputs.required_string(data, "new_password", max_length=1000))


@routes.post("/auth/user/password")
@guarded
async def change_user_password(request: web.Request) -> web.StreamResponse:
    data = await inputs.json_body(request)
    _, session, user = await current_session(request, USER_PORTAL)
    assert isinstance(user, User)
    old, new = _passwords(data)
    result = await passwords.change_user_password(_signin(request), session, user, old, new, client_info(request))
    return answer(request, result)


@routes.post("/auth/admin/password")
@guarded
async def change_admin_password(request: web.Request) -> web.StreamResponse:
    data = await inputs.json_body(request)
    _, session, admin = await current_session(request, ADMIN_PORTAL)
    assert isinstance(admin, Admin)
    old, new = _passwords(data)
    result = await passwords.change_admin_password(_signin(request), session, admin, old, new,
                                                   client_info(request))
    return answer(request, result)


# --- enrollment in the user portal ---------------------------------------------------------------


async def _enrollment(request: web.Request) -> tuple[Enrollment, str, Session, User]:
    token, session, user = await current_session(request, USER_PORTAL)
    assert isinstance(user, User)
    return Enrollment(_signin(request)), token, session, user


@routes.get("/auth/user/mfa")
async def my_factors(request: web.Request) -> web.Response:
    enrollment, _, _, user = await _enrollment(request)
    return web.json_response(await enrollment.overview(user))


@routes.post("/auth/user/mfa/totp")
async def enroll_totp(request: web.Request) -> web.Response:
    enrollment, token, session, user = await _enrollment(request)
    return web.json_response(await enrollment.totp_start(token, session, user), status=201)


@routes.post("/auth/user/mfa/totp/verify")
async def confirm_totp(request: web.Request) -> web.Response:
    data = await inputs.json_body(request)
    enrollment, token, session, user = await _enrollment(request)
    code = inputs.required_string(data, "code", max_length=20)
    return web.json_response(await enrollment.totp_confirm(token, session, user, code, client_info(request)),
                             status=201)


@routes.post("/auth/user/mfa/webauthn/options")
async def webauthn_options(request: web.Request) -> web.Response:
    data = await inputs.json_body(request)
    enrollment, token, session, user = await _enrollment(request)
    kind = inputs.required_string(data, "type", max_length=40)
    return web.json_response(await enrollment.webauthn_options(token, session, user, kind))


@routes.post("/auth/user/mfa/webauthn")
async def register_webauthn(request: web.Request) -> web.Response:
    data = await inputs.json_body(request)
    enrollment, token, session, user = await _enrollment(request)
    proof = _proof(data)
    if "credential" not in proof:
        raise bad_request("missing_field", "credential is required")
    name = inputs.string(data, "name", max_length=200) or ""
    registered = await enrollment.webauthn_register(token, session, user, proof["credential"], name.strip(),
                                                    client_info(request))
    return web.json_response(registered, status=201)


@routes.post("/auth/user/mfa/push")
async def push_enrollment(request: web.Request) -> web.Response:
    enrollment, _, session, user = await _enrollment(request)
    return web.json_response(await enrollment.push_enrollment(session, user), status=201)


@routes.post("/auth/user/mfa/duo")
async def enroll_duo(request: web.Request) -> web.Response:
    data = await inputs.json_body(request)
    enrollment, _, session, user = await _enrollment(request)
    username = inputs.string(data, "duo_username", max_length=200) or user.username
    return web.json_response(await enrollment.duo_enroll(session, user, username, client_info(request)),
                             status=201)


# --- the push device's side ----------------------------------------------------------------------


@routes.post("/auth/push/devices")
@guarded
async def enroll_device(request: web.Request) -> web.StreamResponse:
    data = await inputs.json_body(request)
    enrolled = await devices.enroll(
        _signin(request), inputs.required_string(data, "enrollment_token", max_length=200),
        inputs.string(data, "name", max_length=200) or "", inputs.required_string(data, "algorithm", max_length=10),
        inputs.required_string(data, "public_key", max_length=4000),
        inputs.required_string(data, "signature", max_length=400), client_info(request))
    return web.json_response(enrolled, status=201)


@routes.post("/auth/push/devices/{device_id}/inbox")
@guarded
async def device_inbox(request: web.Request) -> web.StreamResponse:
    data = await inputs.json_body(request)
    timestamp = data.get("timestamp")
    if not isinstance(timestamp, int) or isinstance(timestamp, bool):
        raise bad_request("missing_field", "timestamp (Unix seconds) is required")
    if abs(timestamp) >= 2**40:  # far past any clock: refused before any arithmetic overflows
        raise bad_request("invalid_field", "timestamp must be Unix seconds")
    waiting = await devices.inbox(
        _signin(request), inputs.required_string(data, "organization_id", max_length=64),
        request.match_info["device_id"][:64], timestamp, inputs.required_string(data, "signature", max_length=400))
    return web.json_response({"push": waiting})


@routes.post("/auth/push/{push_id}/decision")
@guarded
async def push_decision(request: web.Request) -> web.StreamResponse:
    data = await inputs.json_body(request)
    decision = await devices.decide(
        _signin(request), request.match_info["push_id"][:64],
        inputs.required_string(data, "device_id", max_length=64),
        inputs.required_string(data, "decision", max_length=10),
        inputs.required_string(data, "signature", max_length=400), client_info(request))
    return web.json_response({"push_id": request.match_info["push_id"], "decision": decision})


# --- Duo settings (management API, x-api-key) ----------------------------------------------------


@routes.get("/api/v1/mfa/duo")
async def read_duo(request: web.Request) -> web.Response:
    async with services_of(request).uow(actor_of(request)) as uow:
        duo_settings.authorize(uow)
        return web.json_response(await duo_settings.read(uow))


@routes.put("/api/v1/mfa/duo")
async def save_duo(request: web.Request) -> web.Response:
    data = await inputs.json_body(request)
    client_id = inputs.required_string(data, "client_id", max_length=100)
    secret = inputs.required_string(data, "client_secret", max_length=200)
    api_host = inputs.required_string(data, "api_host", max_length=300)
    services = services_of(request)
    gateway = DuoGateway(services.settings.duo_redirect_uri, services.settings.duo_ca_bundle,
                         services.settings.duo_api_hosts)

    async def work(uow: Any) -> dict[str, Any]:
        return await duo_settings.save(uow, gateway, client_id, secret, api_host.strip().lower())

    return web.json_response(await run(services, actor_of(request), work))


@routes.delete("/api/v1/mfa/duo")
async def delete_duo(request: web.Request) -> web.Response:
    await run(services_of(request), actor_of(request), duo_settings.remove)
    return web.Response(status=204)
