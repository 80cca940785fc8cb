"""The user portal's pages (``/portal/``): sign-in (password then a factor, or passwordless Go),
MFA enrollment, the password change, and *Launch Admin Portal* with step-up MFA.

The pages call the same flows as the sign-in API (``service.signin``): the rules (which factors,
when Go is accepted, who may enroll what) live there.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import segno
from aiohttp import web
from markupsafe import Markup

from service.adapters.sessions import Session
from service.api.auth import USER_COOKIE, current_session
from service.domain.errors import DomainError
from service.domain.model import User
from service.http import inputs
from service.http.context import services_of
from service.http.errors import ApiError
from service.signin import passwords
from service.signin.challenges import STEP_UP, USER_LOGIN
from service.signin.enrollment import Enrollment
from service.signin.flows import MfaRequired, SignedIn
from service.signin.records import USER_PORTAL
from service.web import ceremony as mfa
from service.web import common
from service.web.common import (
    CsrfRefused,
    check_csrf,
    json_answer,
    page_status,
    redirect,
    render,
    script_call,
    sentence,
    set_cookie,
    set_session_cookie,
    sign_in_fields,
)

routes = web.RouteTableDef()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SIGN_IN = mfa.Ceremony(base="/portal/sign-in", purpose=USER_LOGIN, layout="portal", home="/portal/",
                       start="/portal/sign-in", cookie="adminlink_user_challenge", cookie_path="/portal/",
                       title="Verify it's you")
LAUNCH = mfa.Ceremony(base="/portal/launch-admin", purpose=STEP_UP, layout="portal", home="/admin/",
                      start="/portal/", cookie="adminlink_step_up", cookie_path="/portal/",
                      title="Confirm it's you to open the admin portal")
ENROLLED = {"totp": "Your authenticator app is enrolled.", "webauthn": "Your authenticator is registered.",
            "password": "Your password is changed."}


TOTP_PAGE = "/portal/mfa/totp"
TOTP_REQUIRED = "totp_enrollment_required"
REQUIRED_SENTENCE = ("Your administrator requires an authenticator app (TOTP) for your account. "
                     "Set it up to continue.")


@dataclass(frozen=True)
class Me:
    token: str
    portal_session: Session
    user: User
    is_admin: bool
    totp_required: bool  # an administrator requires TOTP and it is not enrolled yet


async def me_of(request: web.Request) -> Me:
    try:
        token, session, identity = await current_session(request, USER_PORTAL)
    except ApiError as ended:
        raise redirect("/portal/sign-in") from ended
    if not isinstance(identity, User):
        raise redirect("/portal/sign-in")
    async with services_of(request).read_only() as reads:
        admin = await reads.admins.by_linked_user(identity.organization_id, identity.id)
    required = await _enrollment(request).totp_still_required(identity)
    return Me(token, session, identity, admin is not None, required)


def layout(me: Me, title: str, **context: Any) -> dict[str, Any]:
    return {"layout": "portal", "title": title, "who": me.user.email, "is_admin": me.is_admin,
            "totp_required": me.totp_required, **context}


PageHandler = Callable[[web.Request, Me], Awaitable[web.StreamResponse]]


def portal_page(handler: PageHandler) -> Handler:
    """A page of the signed-in user; until a TOTP an administrator requires is enrolled, the
    TOTP enrollment page instead."""
    return _page(handler, enrolling_totp=False)


def totp_enrollment_page(handler: PageHandler) -> Handler:
    """A page of the TOTP enrollment, open also while TOTP is required and not enrolled yet."""
    return _page(handler, enrolling_totp=True)


def _page(handler: PageHandler, *, enrolling_totp: bool) -> Handler:
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        me = await me_of(request)
        if me.totp_required and not enrolling_totp:
            raise redirect(TOTP_PAGE)
        try:
            return await handler(request, me)
        except CsrfRefused:
            return render(request, "message.html", layout(me, "Refused", text="This form was stale. Reload the "
                                                                              "page and try again."), 403)
        except DomainError as error:
            return render(request, "message.html", layout(me, "Not done", text=sentence(error), code=error.code),
                          page_status(error))

    return wrapped


def portal_json(handler: Callable[[web.Request, Me], Awaitable[web.StreamResponse]]) -> Handler:
    """A page script's call in a signed-in session (see ``script_call``)."""

    @script_call
    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        me = await me_of(request)
        if me.totp_required:
            return json_answer(request, {"error": REQUIRED_SENTENCE, "code": TOTP_REQUIRED, "redirect": TOTP_PAGE},
                               403)
        return await handler(request, me)

    return wrapped


# --- sign-in -----------------------------------------------------------------------------------


@routes.get("/")
async def root(request: web.Request) -> web.StreamResponse:
    raise redirect("/portal/")


@routes.get("/portal")
async def portal_root(request: web.Request) -> web.StreamResponse:
    raise redirect("/portal/")


def _sign_in_context(**extra: Any) -> dict[str, Any]:
    return {"layout": "portal", "title": "Sign in to the user portal", "action": "/portal/sign-in", "go": True,
            **extra}


@routes.get("/portal/sign-in")
async def sign_in_page(request: web.Request) -> web.StreamResponse:
    return render(request, "sign_in.html", _sign_in_context())


def signed_in(request: web.Request, result: SignedIn, target: str) -> web.HTTPSeeOther:
    response = redirect(target)
    set_session_cookie(request, response, result)
    return response


@routes.post("/portal/sign-in")
async def sign_in(request: web.Request) -> web.StreamResponse:
    try:
        form = await check_csrf(request)
    except CsrfRefused:
        return render(request, "sign_in.html", _sign_in_context(error="This form was stale. Please try again."), 403)
    identifier, org_id = sign_in_fields(form)
    try:
        result = await mfa.signin_of(request).password_step(
            USER_PORTAL, identifier, str(form.get("password", ""))[:1000], org_id or None, mfa.client(request))
    except DomainError as error:
        return render(request, "sign_in.html", _sign_in_context(identifier=identifier, organization_id=org_id,
                                                                error=sentence(error), error_code=error.code),
                      page_status(error))
    if isinstance(result, SignedIn):  # no factor yet: the portal is where the first one is enrolled
        raise signed_in(request, result, "/portal/mfa")
    assert isinstance(result, MfaRequired)
    raise mfa.begin(request, SIGN_IN, result.challenge_id, result.expires_in)


mfa.add_routes(routes, SIGN_IN)


@routes.post("/portal/sign-in/go/options")
@script_call
async def go_options(request: web.Request) -> web.StreamResponse:
    challenge_id, options = await mfa.signin_of(request).go_options(mfa.client(request))
    response = json_answer(request, {"options": options})
    set_cookie(request, response, "adminlink_go_challenge", challenge_id, path="/portal/", max_age=300)
    return response


@routes.post("/portal/sign-in/go")
@script_call
async def go(request: web.Request) -> web.StreamResponse:
    data = await inputs.json_body(request)
    challenge_id = request.cookies.get("adminlink_go_challenge", "")
    if not isinstance(data.get("credential"), dict) or not challenge_id:
        return json_answer(request, {"error": "Start Go again.", "code": "challenge_expired"}, 401)
    result = await mfa.signin_of(request).go_complete(challenge_id, data["credential"], mfa.client(request))
    response = json_answer(request, {"redirect": "/portal/"})
    set_session_cookie(request, response, result)
    response.del_cookie("adminlink_go_challenge", path="/portal/")
    return response


@routes.post("/portal/sign-out")
async def sign_out(request: web.Request) -> web.StreamResponse:
    raise await common.sign_out(request, USER_COOKIE, "/portal/", "/portal/sign-in")


# --- home, factors, password -----------------------------------------------------------------------


def _enrollment(request: web.Request) -> Enrollment:
    return Enrollment(mfa.signin_of(request))


@routes.get("/portal/")
@portal_page
async def home(request: web.Request, me: Me) -> web.StreamResponse:
    overview = await _enrollment(request).overview(me.user)
    return render(request, "portal/home.html", layout(me, "Your account", user=me.user, overview=overview,
                                                      session_factor=me.portal_session.factor,
                                                      flash=ENROLLED.get(request.query.get("done", ""))))


@routes.get("/portal/mfa")
@portal_page
async def factors(request: web.Request, me: Me) -> web.StreamResponse:
    overview = await _enrollment(request).overview(me.user)
    return render(request, "portal/mfa.html", layout(me, "Multi-factor authentication", overview=overview,
                                                     flash=ENROLLED.get(request.query.get("done", ""))))


def qr_svg(text: str) -> Markup:
    """A QR code as inline SVG: no image request, nothing for the CSP to allow."""
    svg = segno.make(text, error="m").svg_inline(scale=5, dark="#1d2330", light="#ffffff", omitsize=False)
    return Markup(svg)  # noqa: S704 (segno's own markup; the text it encodes is escaped by it)


@routes.get(TOTP_PAGE)
@totp_enrollment_page
async def totp_page(request: web.Request, me: Me) -> web.StreamResponse:
    """Where a user whose administrator requires TOTP is sent: the sentence, and the button that
    starts the enrollment."""
    if not me.totp_required:
        raise redirect("/portal/mfa")
    return render(request, "portal/totp.html", layout(me, "Set up an authenticator app",
                                                      required_sentence=REQUIRED_SENTENCE))


@routes.post(TOTP_PAGE)
@totp_enrollment_page
async def totp_start(request: web.Request, me: Me) -> web.StreamResponse:
    await check_csrf(request)
    started = await _enrollment(request).totp_start(me.token, me.portal_session, me.user)
    return render(request, "portal/totp.html", layout(me, "Set up an authenticator app", secret=started["secret"],
                                                      qr=qr_svg(started["otpauth_uri"]), **_required(me)))


def _required(me: Me) -> dict[str, str]:
    return {"required_sentence": REQUIRED_SENTENCE} if me.totp_required else {}


@routes.post("/portal/mfa/totp/confirm")
@totp_enrollment_page
async def totp_confirm(request: web.Request, me: Me) -> web.StreamResponse:
    form = await check_csrf(request)
    code = str(form.get("code", "")).strip()[:20]
    try:
        await _enrollment(request).totp_confirm(me.token, me.portal_session, me.user, code, mfa.client(request))
    except DomainError as error:
        if error.code != "invalid_code":
            raise
        return render(request, "portal/totp.html", layout(me, "Set up an authenticator app", error=sentence(error),
                                                          **_required(me)), 400)
    raise redirect("/portal/mfa?done=totp")


@routes.post("/portal/mfa/webauthn/options")
@portal_json
async def webauthn_options(request: web.Request, me: Me) -> web.StreamResponse:
    data = await inputs.json_body(request)
    kind = str(data.get("type", ""))[:40]
    answer = await _enrollment(request).webauthn_options(me.token, me.portal_session, me.user, kind)
    return json_answer(request, {"options": answer["options"]})


@routes.post("/portal/mfa/webauthn")
@portal_json
async def webauthn_register(request: web.Request, me: Me) -> web.StreamResponse:
    data = await inputs.json_body(request)
    if not isinstance(data.get("credential"), dict):
        return json_answer(request, {"error": "The authenticator gave no answer.", "code": "missing_field"}, 400)
    name = str(data.get("name") or "")[:200].strip()
    await _enrollment(request).webauthn_register(me.token, me.portal_session, me.user, data["credential"], name,
                                                 mfa.client(request))
    return json_answer(request, {"redirect": "/portal/mfa?done=webauthn"})


@routes.post("/portal/mfa/push")
@portal_page
async def push_pairing(request: web.Request, me: Me) -> web.StreamResponse:
    await check_csrf(request)
    pairing = await _enrollment(request).push_enrollment(me.portal_session, me.user)
    return render(request, "portal/push.html", layout(me, "Pair your phone", pairing=pairing,
                                                      qr=qr_svg(pairing["pairing_payload"])))


@routes.get("/portal/password")
@portal_page
async def password_page(request: web.Request, me: Me) -> web.StreamResponse:
    return render(request, "portal/password.html", layout(me, "Change your password"))


@routes.post("/portal/password")
@portal_page
async def change_password(request: web.Request, me: Me) -> web.StreamResponse:
    form = await check_csrf(request)
    old, new, again = (str(form.get(name, ""))[:1000] for name in ("old_password", "new_password", "confirm"))
    if new != again:
        return render(request, "portal/password.html", layout(
            me, "Change your password", field_error="The two new passwords are not the same."), 400)
    try:
        result = await passwords.change_user_password(mfa.signin_of(request), me.portal_session, me.user, old, new,
                                                      mfa.client(request))
    except DomainError as error:
        return render(request, "portal/password.html", layout(me, "Change your password", error=sentence(error)),
                      page_status(error))
    raise signed_in(request, result, "/portal/?done=password")


# --- Launch Admin Portal: step-up ---------------------------------------------------------------


@routes.post("/portal/launch-admin")
@portal_page
async def launch_admin(request: web.Request, me: Me) -> web.StreamResponse:
    await check_csrf(request)
    result = await mfa.signin_of(request).launch_admin_portal(me.token, me.portal_session, me.user, mfa.client(request))
    raise mfa.begin(request, LAUNCH, result.challenge_id, result.expires_in)


mfa.add_routes(routes, LAUNCH)
