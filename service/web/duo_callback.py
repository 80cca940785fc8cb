"""Duo's redirect back, as a browser sees it: a completed sign-in goes to its portal with the
session cookie set; a refused one gets a page that says why and where to start again. The API
route (``GET /auth/duo/callback``) completes the sign-in; this only shapes the answer."""

from __future__ import annotations

from aiohttp import web

from service.domain.errors import DomainError
from service.signin.flows import Pending, SignedIn
from service.signin.records import ADMIN_PORTAL
from service.web.common import page_status, redirect, render, sentence, set_session_cookie

HOME = {ADMIN_PORTAL: "/admin/", "user_portal": "/portal/"}


def wants_page(request: web.Request) -> bool:
    return "text/html" in request.headers.get("Accept", "")


def signed_in(request: web.Request, result: SignedIn | Pending) -> web.HTTPSeeOther | None:
    """The browser's answer to a completed sign-in (None: answer as the API does)."""
    if not isinstance(result, SignedIn) or result.client != "web":
        return None
    response = redirect(HOME[result.portal_session.portal])
    set_session_cookie(request, response, result)
    return response


def refused(request: web.Request, error: DomainError) -> web.Response:
    return render(request, "message.html", {"layout": "portal", "title": "Duo sign-in not completed",
                                            "text": sentence(error), "code": error.code,
                                            "back": "/portal/sign-in", "back_label": "Sign in again"},
                  page_status(error))
