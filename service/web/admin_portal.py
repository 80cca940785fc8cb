"""The admin portal's pages (``/admin/``): sign-in with the same flow as ``POST /auth/admin/login``,
then the console: users with their *User Security* actions, and the administrators list.

Every console action runs the same command through the message bus as the management API does,
as the signed-in admin (``auth_method: admin_portal_session``); the policy table decides, and a
refusal is recorded by the bus as it is for an API key. Which buttons are enabled is asked of
the same table (``policy.decide``, the logic of ``POST /api/v1/policy/check``).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web

from service import policy, views
from service.adapters.sessions import Session
from service.api.auth import COOKIE, current_session
from service.domain import commands as c
from service.domain.commands import Actor
from service.domain.errors import DomainError
from service.domain.model import Admin, Role
from service.handlers.common import load_user_and_admin
from service.http.context import services_of
from service.http.errors import ApiError
from service.policy import Action
from service.signin import passwords
from service.signin.challenges import ADMIN_LOGIN
from service.signin.enrollment import Enrollment
from service.signin.flows import MfaRequired
from service.signin.records import ADMIN_PORTAL
from service.web import ceremony as mfa
from service.web import common
from service.web.common import (
    CsrfRefused,
    admin_sign_in_first,
    check_csrf,
    local_path,
    page_status,
    redirect,
    render,
    sentence,
    set_session_cookie,
    sign_in_fields,
)

routes = web.RouteTableDef()
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SIGN_IN = mfa.Ceremony(base="/admin/sign-in", purpose=ADMIN_LOGIN, layout="admin", home="/admin/",
                       start="/admin/sign-in", cookie="adminlink_admin_challenge", cookie_path="/admin/",
                       title="Verify it's you")
AUTH_METHOD = "admin_portal_session"


@dataclass(frozen=True)
class Console:
    """The signed-in admin, as the actor of every console action."""

    actor: Actor
    admin: Admin
    portal_session: Session

    def may(self, action: Action, target_has_admin_role: bool) -> policy.Decision:
        return policy.decide(action, self.actor.role, target_has_admin_role)


async def console_of(request: web.Request) -> Console:
    """The admin portal's session, or a redirect to its sign-in (and back here afterwards)."""
    try:
        _, session, identity = await current_session(request, ADMIN_PORTAL)
    except ApiError as ended:
        raise admin_sign_in_first(request) from ended
    if session.kind != "admin" or not isinstance(identity, Admin):
        raise redirect("/admin/sign-in")
    actor = Actor(organization_id=identity.organization_id, id=identity.id, type="admin", role=identity.role,
                  email=identity.email, linked_user_id=identity.linked_user_id, source="admin_portal",
                  client_ip=request.remote, useragent=request.headers.get("User-Agent"), auth_method=AUTH_METHOD)
    return Console(actor, identity, session)


def layout(console: Console, title: str, **context: Any) -> dict[str, Any]:
    ops = console.may(Action.READ_JOBS, False).allowed
    return {"layout": "admin", "title": title, "who": console.admin.email, "role": console.admin.role.value,
            "show_ops": ops, **context}


def console_page(handler: Callable[[web.Request, Console], Awaitable[web.StreamResponse]]) -> Handler:
    """Signs the request in; a stale form or a refusal answers a page that says why (a
    permission refusal with 403 and the role it needs)."""

    @functools.wraps(handler)
    async def wrapped(request: web.Request) -> web.StreamResponse:
        console = await console_of(request)
        try:
            return await handler(request, console)
        except CsrfRefused:
            return render(request, "message.html", layout(
                console, "Refused", text="This form was stale or not sent from this portal. Reload the page "
                                         "and try again."), 403)
        except DomainError as error:
            return render(request, "message.html", layout(console, "Not done", text=sentence(error),
                                                          code=error.code), page_status(error))

    return wrapped


# --- sign-in ---------------------------------------------------------------------------------------


@routes.get("/admin")
async def admin_root(request: web.Request) -> web.StreamResponse:
    raise redirect("/admin/")


@routes.get("/admin/sign-in")
async def sign_in_page(request: web.Request) -> web.StreamResponse:
    return render(request, "sign_in.html", {"layout": "admin", "title": "Sign in to the admin portal",
                                            "action": "/admin/sign-in", "next": request.query.get("next", "")})


@routes.post("/admin/sign-in")
async def sign_in(request: web.Request) -> web.StreamResponse:
    context: dict[str, Any] = {"layout": "admin", "title": "Sign in to the admin portal", "action": "/admin/sign-in"}
    try:
        form = await check_csrf(request)
    except CsrfRefused:
        return render(request, "sign_in.html", {**context, "error": "This form was stale. Please try again."}, 403)
    identifier, org_id = sign_in_fields(form)
    next_path = local_path(str(form.get("next", "")), "/admin/")
    context.update(identifier=identifier, organization_id=org_id, next=next_path)
    try:
        result = await mfa.signin_of(request).password_step(
            ADMIN_PORTAL, identifier, str(form.get("password", ""))[:1000], org_id or None, mfa.client(request))
    except DomainError as error:
        return render(request, "sign_in.html", {**context, "error": sentence(error), "error_code": error.code,
                                                "user_portal_hint": error.code in (
                                                    "not_an_admin", "mfa_not_enrolled")}, page_status(error))
    assert isinstance(result, MfaRequired)  # the admin portal always asks a factor
    raise mfa.begin(request, SIGN_IN, result.challenge_id, result.expires_in, next_path)


mfa.add_routes(routes, SIGN_IN)


@routes.post("/admin/sign-out")
async def sign_out(request: web.Request) -> web.StreamResponse:
    raise await common.sign_out(request, COOKIE, "/admin/", "/admin/sign-in")


# --- console ---------------------------------------------------------------------------------------


@routes.get("/admin/")
@console_page
async def home(request: web.Request, console: Console) -> web.StreamResponse:
    flash = "Your password is changed." if request.query.get("done") == "password" else None
    return render(request, "admin/home.html", layout(console, "Admin portal", flash=flash))


@routes.get("/admin/users")
@console_page
async def users(request: web.Request, console: Console) -> web.StreamResponse:
    policy.authorize(Action.READ_USERS, console.actor.role)
    email = request.query.get("email", "").strip()[:320]
    async with services_of(request).uow(console.actor) as uow:
        rows, total = await uow.users.page(console.actor.organization_id, email=email or None, limit=500, skip=0)
        listed = await views.users(uow, rows)
    return render(request, "admin/users.html", layout(console, "Users", users=listed, total=total, email=email))


@dataclass(frozen=True)
class UserAction:
    label: str
    action: Action
    command: Callable[[Actor, str, dict[str, Any]], c.Command]
    done: str
    danger: bool = False


USER_ACTIONS: dict[str, UserAction] = {
    "suspend": UserAction("Suspend", Action.SUSPEND_USER, lambda a, u, f: c.SuspendUser(a, u),
                          "The user is suspended.", danger=True),
    "activate": UserAction("Activate", Action.ACTIVATE_USER, lambda a, u, f: c.ActivateUser(a, u),
                           "The user is active."),
    "unlock": UserAction("Unlock", Action.UNLOCK_USER, lambda a, u, f: c.UnlockUser(a, u), "The user is unlocked."),
    "expire-password": UserAction("Force password reset", Action.FORCE_PASSWORD_RESET,
                                  lambda a, u, f: c.ForcePasswordReset(a, u), "The user must set a new password."),
    "require-totp": UserAction("Require TOTP", Action.TOTP_ENROLL_RESET, lambda a, u, f: c.RequireTotp(a, u),
                               "The user must enroll TOTP in the user portal."),
    "reset-totp": UserAction("Reset TOTP", Action.TOTP_ENROLL_RESET,
                             lambda a, u, f: c.ResetTotp(a, u, require=True),
                             "The user's TOTP is deleted; they enroll a new one in the user portal.", danger=True),
    "remove-totp": UserAction("Remove TOTP", Action.TOTP_ENROLL_RESET, lambda a, u, f: c.ResetTotp(a, u),
                              "The user's TOTP is removed.", danger=True),
    "remove-webauthn": UserAction("Remove", Action.WEBAUTHN_CHANGE,
                                  lambda a, u, f: c.DeleteWebauthnCredential(a, u, str(f.get("id", ""))[:64]),
                                  "The WebAuthn credential is removed.", danger=True),
    "remove-push": UserAction("Remove", Action.PUSH_CHANGE,
                              lambda a, u, f: c.DeletePushDevice(a, u, str(f.get("id", ""))[:64]),
                              "The push device is removed.", danger=True),
    "grant-admin": UserAction("Grant administrator access", Action.ASSIGN_ADMIN_ROLE,
                              lambda a, u, f: c.CreateAdminFromUser(a, _role(f), user_id=u,
                                                                    api_access=f.get("api_access") == "on"),
                              "The user now holds an admin role. An email tells them."),
}
SECURITY_ACTIONS = ("suspend", "activate", "unlock", "expire-password")
TOTP_ACTIONS = ("require-totp", "reset-totp", "remove-totp")


def _role(form: dict[str, Any]) -> Role:
    try:
        return Role(str(form.get("role", "")))
    except ValueError:
        raise ApiError(400, "invalid_field", "choose one of the admin roles") from None


@routes.get("/admin/users/{user_id}")
@console_page
async def user_detail(request: web.Request, console: Console) -> web.StreamResponse:
    policy.authorize(Action.READ_USERS, console.actor.role)
    async with services_of(request).uow(console.actor) as uow:
        user, admin = await load_user_and_admin(uow, request.match_info["user_id"])
        shown = await views.user(uow, user, admin, load_admin=False)
    factors = await Enrollment(mfa.signin_of(request)).overview(user)
    has_admin = admin is not None
    gates = {slug: console.may(a.action, has_admin) for slug, a in USER_ACTIONS.items()}
    gates["remove-admin"] = console.may(Action.REMOVE_ADMIN_ACCESS, True)
    done = request.query.get("done", "")
    flash = USER_ACTIONS[done].done if done in USER_ACTIONS else ADMIN_DONE.get(done)
    return render(request, "admin/user.html", layout(
        console, shown["email"], user=shown, admin=admin, factors=factors, gates=gates, actions=USER_ACTIONS,
        security_actions=SECURITY_ACTIONS, totp_actions=TOTP_ACTIONS, roles=[r.value for r in Role], flash=flash))


@routes.post("/admin/users/{user_id}/actions/{slug}")
@console_page
async def user_action(request: web.Request, console: Console) -> web.StreamResponse:
    form = await check_csrf(request)
    chosen = USER_ACTIONS.get(request.match_info["slug"])
    if chosen is None:
        raise web.HTTPNotFound()
    user_id = request.match_info["user_id"]
    await services_of(request).bus.handle(chosen.command(console.actor, user_id, form))
    raise redirect(f"/admin/users/{quote(user_id, safe='')}?done={request.match_info['slug']}")


# --- the admin's own password ------------------------------------------------------------------------


@routes.get("/admin/password")
@console_page
async def password_page(request: web.Request, console: Console) -> web.StreamResponse:
    return render(request, "admin/password.html", layout(console, "Change your password"))


@routes.post("/admin/password")
@console_page
async def change_password(request: web.Request, console: Console) -> web.StreamResponse:
    """A classic admin's own password. An admin linked to a user is told to use the user portal
    (the flow refuses with ``use_user_portal``): it has no admin password any more."""
    form = await check_csrf(request)
    old, new, again = (str(form.get(name, ""))[:1000] for name in ("old_password", "new_password", "confirm"))
    if new != again:
        return render(request, "admin/password.html", layout(
            console, "Change your password", field_error="The two new passwords are not the same."), 400)
    try:
        result = await passwords.change_admin_password(mfa.signin_of(request), console.portal_session,
                                                       console.admin, old, new, mfa.client(request))
    except DomainError as error:
        return render(request, "admin/password.html", layout(
            console, "Change your password", error=sentence(error), error_code=error.code,
            user_portal_hint=error.code == "use_user_portal"), page_status(error))
    response = redirect("/admin/?done=password")
    set_session_cookie(request, response, result)
    raise response


# --- administrators ----------------------------------------------------------------------------------

MFA_STATUS = {"inherited_from_user": "Inherited from user", "linked_user": "Inherited from user",
              "totp": "TOTP", "not_enrolled": "Not enrolled"}
ADMIN_DONE = {"link-user": "The admin now signs in with the matching user's credentials. Its own password "
                           "and TOTP are deleted.",
              "remove-access": "Admin access is removed. The user account is kept.",
              "from-user": "The user now holds an admin role. An email tells them.",
              "role": "The admin's role is changed."}


@routes.get("/admin/admins")
@console_page
async def admins(request: web.Request, console: Console) -> web.StreamResponse:
    policy.authorize(Action.READ_ADMINS, console.actor.role)
    async with services_of(request).uow(console.actor) as uow:
        listed = await views.admins(uow, console.actor.organization_id)
    gates = {"link-user": console.may(Action.ASSIGN_ADMIN_ROLE, True),
             "remove-access": console.may(Action.REMOVE_ADMIN_ACCESS, True),
             "from-user": console.may(Action.ASSIGN_ADMIN_ROLE, False),
             "role": console.may(Action.MANAGE_ADMINS, True)}
    return render(request, "admin/admins.html", layout(
        console, "Administrators", admins=listed, mfa_status=MFA_STATUS, gates=gates, roles=[r.value for r in Role],
        flash=ADMIN_DONE.get(request.query.get("done", ""))))


@routes.post("/admin/admins/from-user")
@console_page
async def admin_from_user(request: web.Request, console: Console) -> web.StreamResponse:
    """The seed's *+ Admin > From User*: the user found by email gets an admin role."""
    form = await check_csrf(request)
    email = str(form.get("email", "")).strip()[:320]
    await services_of(request).bus.handle(c.CreateAdminFromUser(
        console.actor, _role(form), email=email, api_access=form.get("api_access") == "on"))
    raise redirect("/admin/admins?done=from-user")


@routes.post("/admin/admins/{admin_id}/role")
@console_page
async def change_role(request: web.Request, console: Console) -> web.StreamResponse:
    form = await check_csrf(request)
    await services_of(request).bus.handle(c.UpdateAdmin(console.actor, request.match_info["admin_id"],
                                                        role=_role(form)))
    raise redirect("/admin/admins?done=role")


@routes.post("/admin/admins/{admin_id}/link-user")
@console_page
async def link_user(request: web.Request, console: Console) -> web.StreamResponse:
    form = await check_csrf(request)
    acknowledged = form.get("acknowledge") == "on"
    await services_of(request).bus.handle(c.LinkAdminToUser(console.actor, request.match_info["admin_id"],
                                                            acknowledged))
    raise redirect("/admin/admins?done=link-user")


@routes.post("/admin/admins/{admin_id}/remove-access")
@console_page
async def remove_access(request: web.Request, console: Console) -> web.StreamResponse:
    form = await check_csrf(request)
    acknowledged = form.get("acknowledge") == "on"
    await services_of(request).bus.handle(c.RemoveAdminAccess(console.actor, request.match_info["admin_id"],
                                                              acknowledged))
    back = local_path(str(form.get("back", "")), "/admin/admins")
    raise redirect(back + ("&" if "?" in back else "?") + "done=remove-access")
