"""What every page shares: rendering with the security headers, CSRF tokens, session cookies,
and refusals said in words a person understands.

Pages hold no rule: they call the sign-in flows and the message bus, and show what those
decide. A refusal's code stays the API's; only its sentence is written for people here.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp_jinja2
from aiohttp import web

from service.adapters.crypto import constant_time_equal
from service.api.auth import PORTAL_COOKIES
from service.domain.errors import DomainError
from service.domain.text import unstorable_text
from service.http.context import services_of
from service.http.errors import ApiError, status_for
from service.signin import known_devices
from service.signin.errors import RateLimited, Unavailable
from service.signin.flows import SignedIn

CSRF_COOKIE = "adminlink_csrf"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"
NEW_CSRF = web.RequestKey("new_csrf", str)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# No inline script or style anywhere: scripts and the stylesheet are files of this origin.
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
       "form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class CsrfRefused(Exception):
    """A state-changing request without this browser's CSRF token."""


# --- CSRF: a random cookie per browser, and a form token derived from it -------------------------


def _csrf_secret(request: web.Request) -> str:
    value = request.cookies.get(CSRF_COOKIE)
    if value and 20 <= len(value) <= 100:
        return value
    if NEW_CSRF not in request:
        request[NEW_CSRF] = secrets.token_urlsafe(32)
    return request[NEW_CSRF]


def csrf_token(request: web.Request) -> str:
    """The token forms carry: an HMAC of the browser's CSRF cookie under the server's key, so a
    page of another site can neither read nor make it."""
    key = hashlib.sha256(b"adminlink page csrf\0" + services_of(request).settings.secret_key).digest()
    return hmac.new(key, _csrf_secret(request).encode(), hashlib.sha256).hexdigest()


async def check_csrf(request: web.Request) -> dict[str, Any]:
    """The posted form (empty for a JSON call), once its CSRF token (field or header) matches."""
    form: dict[str, Any] = {}
    offered = request.headers.get(CSRF_HEADER)
    if request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        try:
            form = dict(await request.post())
        except UnicodeDecodeError as exc:  # aiohttp decodes a form body strictly
            raise ApiError(400, "invalid_encoding", "The form is not UTF-8 text.") from exc
        except ValueError as exc:  # e.g. multipart/form-data without its boundary
            raise ApiError(400, "invalid_form", "The form could not be read.") from exc
        offered = offered or form.get(CSRF_FIELD)
    if CSRF_COOKIE not in request.cookies or not isinstance(offered, str) or not constant_time_equal(
            offered, csrf_token(request)):
        raise CsrfRefused()
    if unstorable_text(form):  # as inputs.json_body refuses it: no database text holds a NUL
        raise ApiError(400, "invalid_encoding", "The form holds a NUL character.")
    return form


def _keep_csrf_cookie(request: web.Request, response: web.StreamResponse) -> None:
    if NEW_CSRF in request:
        response.set_cookie(CSRF_COOKIE, request[NEW_CSRF], httponly=True, samesite="Strict", path="/",
                            secure=services_of(request).settings.cookie_secure)


# --- responses -----------------------------------------------------------------------------------


def render(request: web.Request, template: str, context: dict[str, Any] | None = None,
           status: int = 200) -> web.Response:
    context = {"csrf": csrf_token(request), "path": request.path, **(context or {})}
    response = aiohttp_jinja2.render_template(template, request, context, status=status)
    response.headers.update(SECURITY_HEADERS)
    _keep_csrf_cookie(request, response)
    return response


def json_answer(request: web.Request, body: dict[str, Any], status: int = 200) -> web.Response:
    response = web.json_response(body, status=status, headers={"Cache-Control": "no-store"})
    _keep_csrf_cookie(request, response)
    return response


def script_call(handler: Handler) -> Handler:
    """A call from a page's script (JSON, the CSRF token in ``X-CSRF-Token``): checked, then
    answered JSON; a refusal as ``{"error": sentence, "code"}``, an ended session as 401."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            await check_csrf(request)
            return await handler(request)
        except web.HTTPSeeOther:  # a page would go to the sign-in; a script is told instead
            return json_answer(request, {"error": "Your session has ended. Sign in again.",
                                         "code": "not_signed_in"}, 401)
        except CsrfRefused:
            return json_answer(request, {"error": "This page was stale. Reload it and try again.",
                                         "code": "csrf_failed"}, 403)
        except DomainError as error:
            return json_answer(request, {"error": sentence(error), "code": error.code}, page_status(error))

    return wrapped


def sign_in_fields(form: Any) -> tuple[str, str]:
    """The sign-in form's username or email (``identifier``; ``email`` as the form was named
    before) and organization, trimmed to their longest lengths."""
    identifier = str(form.get("identifier") or form.get("email") or "").strip()[:320]
    return identifier, str(form.get("organization_id", "")).strip()[:64]


def redirect(location: str) -> web.HTTPSeeOther:
    return web.HTTPSeeOther(location, headers={"Cache-Control": "no-store"})


def admin_sign_in_first(request: web.Request) -> web.HTTPSeeOther:
    """The admin portal's sign-in, which comes back to this page afterwards."""
    return redirect("/admin/sign-in?next=" + quote(request.path_qs, safe=""))


def local_path(value: str | None, default: str) -> str:
    """A ``next`` address only if it stays on this site (no scheme, no host, no ``//``)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    return default if parts.scheme or parts.netloc else value


def set_cookie(request: web.Request, response: web.StreamResponse, name: str, value: str, *, path: str = "/",
               max_age: int | None = None) -> None:
    """As the sign-in API sets its cookies: HttpOnly, SameSite=Lax, Secure unless configured off."""
    response.set_cookie(name, value, httponly=True, samesite="Lax", path=path, max_age=max_age,
                        secure=services_of(request).settings.cookie_secure)


async def sign_out(request: web.Request, cookie: str, home: str, sign_in: str) -> web.HTTPSeeOther:
    """A portal's sign-out form: the session behind ``cookie`` closed and its cookie gone, then
    the sign-in page (a stale form goes back ``home`` instead, signed in still)."""
    try:
        await check_csrf(request)
    except CsrfRefused:
        return redirect(home)
    token = request.cookies.get(cookie)
    if token:
        await services_of(request).sessions.close(token)
    response = redirect(sign_in)
    response.del_cookie(cookie, path="/")
    return response


def set_session_cookie(request: web.Request, response: web.StreamResponse, signed_in: SignedIn) -> None:
    """The portal's session cookie; after a sign-in with MFA also the known-device cookie, as the
    sign-in API sets it, so that this browser counts as familiar to smart lockout next time."""
    set_cookie(request, response, PORTAL_COOKIES[signed_in.portal_session.portal], signed_in.token)
    if signed_in.device_cookie is not None:
        name, value = signed_in.device_cookie
        set_cookie(request, response, name, value, path=known_devices.COOKIE_PATH,
                   max_age=services_of(request).settings.known_device_days * 86400)


# --- refusals in words a person understands ------------------------------------------------------

SENTENCES = {
    "invalid_credentials": "That username or email and password, or that verification, did not match. Check "
                           "them and try again. If it belongs to several organizations, give the organization "
                           "ID too.",
    "user_locked": "This account is locked after too many failed attempts. Ask an administrator to unlock it.",
    "user_suspended": "This account is suspended. Ask an administrator to activate it.",
    "user_not_active": "This account is not activated yet. Ask an administrator to activate it.",
    "password_expired": "Your password has expired. Ask an administrator to reset it.",
    "not_an_admin": "This account holds no admin role. Use the user portal instead.",
    "mfa_not_enrolled": "The admin portal needs a second factor. Sign in to the user portal and enroll one "
                        "first.",
    "go_not_allowed": "Go opens the admin portal only from a user portal session that was itself signed in "
                      "with Go. Use another factor here.",
    "use_user_portal": "You sign in with your user credentials, so change your password in the user portal.",
    "challenge_expired": "This sign-in took too long or was already used. Please start again.",
    "push_expired": "The push was not answered in time. Send a new one.",
    "push_already_pending": "A push is already waiting on your device. Answer it, or wait a minute.",
    "mfa_session_required": "Sign in with one of your MFA factors before adding another.",
    "invalid_code": "That code does not match. Check your authenticator app's clock and try again.",
    "acknowledgement_required": "Tick the box to confirm that you understand what this change does.",
}


def sentence(error: DomainError) -> str:
    if isinstance(error, RateLimited):
        return f"Too many attempts. Wait {error.retry_after} seconds, then try again."
    required = getattr(error, "required_role", None)
    if required:
        return f"Your admin role may not do this: it needs the {required} role."
    return SENTENCES.get(error.code, error.message[:1].upper() + error.message[1:] + ".")


def page_status(error: DomainError) -> int:
    """The HTTP status of a refusal's page: the API's, with rate limits 429 and an unreachable
    outside service (Duo) 503, as the sign-in API answers them."""
    if isinstance(error, RateLimited):
        return 429
    if isinstance(error, Unavailable):
        return 503
    return status_for(error)


def portal_link(error: DomainError) -> bool:
    """Whether the refusal is best answered by sending the person to the user portal."""
    return error.code in ("not_an_admin", "mfa_not_enrolled", "use_user_portal")
