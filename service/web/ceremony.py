"""The MFA step of a sign-in, as pages: the factor choice, a TOTP code, a WebAuthn ceremony (the
browser's ``navigator.credentials`` in static/webauthn.js), a push waiting page that polls, and
Duo's redirect. One ceremony serves the admin portal's sign-in, the user portal's, and the
step-up that launches the admin portal from the user portal.

The challenge token lives in an HttpOnly cookie scoped to the portal; every step calls the
same ``Signin`` flow the JSON API calls.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from service.api import signin as signin_api
from service.api.auth import current_session
from service.domain.errors import DomainError
from service.domain.model import Admin, User
from service.http import inputs
from service.http.context import services_of
from service.http.errors import ApiError
from service.signin.challenges import STEP_UP
from service.signin.errors import Unauthorized, challenge_expired
from service.signin.flows import Pending, SignedIn, Signin
from service.signin.records import USER_PORTAL, ClientInfo
from service.web.common import (
    CsrfRefused,
    check_csrf,
    json_answer,
    local_path,
    page_status,
    redirect,
    render,
    script_call,
    sentence,
    set_cookie,
    set_session_cookie,
)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

FACTOR_NAMES = {
    "totp": "Authenticator app code (TOTP)",
    "webauthn_device": "This device (Touch ID, Windows Hello, Android)",
    "security_key": "Security key",
    "push": "Push to my phone",
    "duo": "Duo",
    "go": "Go (passwordless, this device)",
}
BUTTONS = {"webauthn_device": "Use this device", "security_key": "Use my security key", "go": "Use Go"}


@dataclass(frozen=True)
class Ceremony:
    base: str  # the URL the ceremony's pages live under
    purpose: str  # the challenge's purpose: admin_login | user_login | step_up
    layout: str  # admin | portal: which portal's header the pages wear
    home: str  # where a completed sign-in goes unless a ``next`` was kept
    start: str  # where to begin again
    cookie: str  # the challenge token's cookie
    cookie_path: str
    title: str

    @property
    def next_cookie(self) -> str:
        return self.cookie + "_next"


def signin_of(request: web.Request) -> Signin:
    return Signin(services_of(request))


def client(request: web.Request) -> ClientInfo:
    return signin_api.client_info(request)


async def _step_up_session(request: web.Request, ceremony: Ceremony) -> tuple[str, Admin | User] | None:
    """The user-portal session a step-up happens in (its token and user); None for a sign-in."""
    if ceremony.purpose != STEP_UP:
        return None
    try:
        token, _, user = await current_session(request, USER_PORTAL)
    except ApiError:
        return None
    return token, user


async def user_session_token(request: web.Request, ceremony: Ceremony) -> str | None:
    """Step-up completes only with the user-portal session that asked for it."""
    found = await _step_up_session(request, ceremony)
    return found[0] if found else None


def begin(request: web.Request, ceremony: Ceremony, challenge_id: str, expires_in: int,
          next_path: str | None = None) -> web.HTTPSeeOther:
    """After the password (or the step-up request): keep the challenge, go to the factor choice."""
    response = redirect(ceremony.base + "/verify")
    set_cookie(request, response, ceremony.cookie, challenge_id, path=ceremony.cookie_path, max_age=expires_in)
    if next_path:
        set_cookie(request, response, ceremony.next_cookie, next_path, path=ceremony.cookie_path,
                   max_age=expires_in)
    return response


def finish(request: web.Request, ceremony: Ceremony, signed_in: SignedIn) -> tuple[str, Callable[[Any], None]]:
    """Where to go now, and what to do to the response: the session cookie set, the challenge's
    cookies gone."""
    target = local_path(request.cookies.get(ceremony.next_cookie), ceremony.home)

    def apply(response: web.StreamResponse) -> None:
        set_session_cookie(request, response, signed_in)
        response.del_cookie(ceremony.cookie, path=ceremony.cookie_path)
        response.del_cookie(ceremony.next_cookie, path=ceremony.cookie_path)

    return target, apply


def challenge_id(request: web.Request, ceremony: Ceremony) -> str:
    token = request.cookies.get(ceremony.cookie)
    if not token:
        raise challenge_expired()
    return token


def _page(ceremony: Ceremony, handler: Handler) -> Handler:
    """A form's refusal re-renders the factor choice with its sentence; a stale form says so."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except CsrfRefused:
            return await verify_page(request, ceremony, error="This form was stale. Please try again.",
                                     status=403)
        except DomainError as error:
            return await verify_page(request, ceremony, error=sentence(error), status=page_status(error),
                                     code=error.code)

    return wrapped


async def verify_page(request: web.Request, ceremony: Ceremony, *, error: str | None = None, status: int = 200,
                      code: str | None = None) -> web.Response:
    factors: list[str] = []
    token = request.cookies.get(ceremony.cookie)
    if token:
        try:
            _, challenge = await signin_of(request).load(token, (ceremony.purpose,))
            factors = list(challenge.factors)
        except DomainError:
            factors = []
    context = {"ceremony": ceremony, "factors": factors, "names": FACTOR_NAMES, "buttons": BUTTONS, "error": error,
               "error_code": code, "layout": ceremony.layout, "title": ceremony.title,
               "who": await signed_in_email(request, ceremony)}
    return render(request, "verify.html", context, status)


async def signed_in_email(request: web.Request, ceremony: Ceremony) -> str | None:
    """Step-up happens inside the user portal: its header shows who is signed in."""
    found = await _step_up_session(request, ceremony)
    return found[1].email if found else None


async def _complete(request: web.Request, ceremony: Ceremony, factor: str,
                    proof: dict[str, Any]) -> SignedIn | Pending:
    return await signin_of(request).complete(challenge_id(request, ceremony), (ceremony.purpose,), factor, proof,
                                             client(request), await user_session_token(request, ceremony))


def add_routes(routes: web.RouteTableDef, ceremony: Ceremony) -> None:
    base = ceremony.base

    async def verify(request: web.Request) -> web.StreamResponse:
        if not request.cookies.get(ceremony.cookie):
            raise redirect(ceremony.start)
        return await verify_page(request, ceremony)

    async def totp(request: web.Request) -> web.StreamResponse:
        form = await check_csrf(request)
        code = str(form.get("code", "")).strip()[:20]
        result = await _complete(request, ceremony, "totp", {"code": code})
        assert isinstance(result, SignedIn)
        target, apply = finish(request, ceremony, result)
        response = redirect(target)
        apply(response)
        raise response

    async def webauthn_options(request: web.Request) -> web.StreamResponse:
        data = await inputs.json_body(request)
        factor = str(data.get("factor", ""))[:40]
        started = await signin_of(request).start(challenge_id(request, ceremony), (ceremony.purpose,), factor,
                                                 client(request), await user_session_token(request, ceremony))
        return json_answer(request, {"options": started["options"]})

    async def webauthn(request: web.Request) -> web.StreamResponse:
        data = await inputs.json_body(request)
        if not isinstance(data.get("credential"), dict):
            return json_answer(request, {"error": "The authenticator gave no answer.", "code": "missing_field"}, 400)
        result = await _complete(request, ceremony, str(data.get("factor", ""))[:40],
                                 {"credential": data["credential"]})
        assert isinstance(result, SignedIn)
        target, apply = finish(request, ceremony, result)
        response = json_answer(request, {"redirect": target})
        apply(response)
        return response

    async def push_send(request: web.Request) -> web.StreamResponse:
        await check_csrf(request)
        await signin_of(request).start(challenge_id(request, ceremony), (ceremony.purpose,), "push",
                                       client(request), await user_session_token(request, ceremony))
        raise redirect(base + "/push")

    async def push_wait(request: web.Request) -> web.StreamResponse:
        return render(request, "push_wait.html", {"ceremony": ceremony, "layout": ceremony.layout,
                                                  "title": "Approve the push"})

    async def push_status(request: web.Request) -> web.StreamResponse:
        try:
            result = await _complete(request, ceremony, "push", {})
        except Unauthorized as refused:
            if refused.code == "invalid_credentials":  # the only wrong answer a push gives: denied
                return json_answer(request, {"status": "denied", "message": "The push was denied on your phone."})
            if refused.code == "push_expired":
                return json_answer(request, {"status": "expired", "message": sentence(refused)})
            raise
        if isinstance(result, Pending):
            return json_answer(request, {"status": "pending", "expires_in": result.expires_in})
        target, apply = finish(request, ceremony, result)
        response = json_answer(request, {"status": "approved", "redirect": target})
        apply(response)
        return response

    async def duo(request: web.Request) -> web.StreamResponse:
        await check_csrf(request)
        started = await signin_of(request).start(challenge_id(request, ceremony), (ceremony.purpose,), "duo",
                                                 client(request), await user_session_token(request, ceremony))
        return render(request, "duo.html", {"ceremony": ceremony, "layout": ceremony.layout, "title": "Duo",
                                            "redirect_url": started["redirect_url"]})

    name = ceremony.purpose
    for path, method, handler in (
        ("/verify", "GET", _page(ceremony, verify)),
        ("/totp", "POST", _page(ceremony, totp)),
        ("/push", "POST", _page(ceremony, push_send)),
        ("/push", "GET", _page(ceremony, push_wait)),
        ("/duo", "POST", _page(ceremony, duo)),
        ("/webauthn/options", "POST", script_call(webauthn_options)),
        ("/webauthn", "POST", script_call(webauthn)),
        ("/push/status", "POST", script_call(push_status)),
    ):
        handler.__name__ = f"{name}_{path.strip('/').replace('/', '_')}_{method.lower()}"
        routes.route(method, base + path)(handler)
