"""Management API (``x-api-key``): users, admins and the admin-role lifecycle.

Routes only translate HTTP into commands and results into JSON; the rules live in the
handlers, the domain and the policy table.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from service import integrations, policy, views
from service.domain import commands as c
from service.domain.model import PasswordAuthority, Role, UserState
from service.handlers.common import load_admin, load_user
from service.http import inputs
from service.http.context import actor_of, services_of
from service.http.errors import bad_request
from service.policy import Action

routes = web.RouteTableDef()


async def run(request: web.Request, command: c.Command) -> Any:
    return await services_of(request).bus.handle(command)


async def user_json(request: web.Request, user_id: str) -> dict[str, Any]:
    actor = actor_of(request)
    async with services_of(request).uow(actor) as uow:
        user = await load_user(uow, user_id)
        return await views.user(uow, user)


def _uid(request: web.Request) -> str:
    return request.match_info["user_id"]


# --- users -----------------------------------------------------------------------------------


@routes.post("/api/v1/users")
async def create_user(request: web.Request) -> web.Response:
    data = await inputs.json_body(request)
    command = c.CreateUser(
        actor_of(request),
        email=inputs.required_string(data, "email"),
        username=inputs.required_string(data, "username", max_length=200),
        firstname=inputs.string(data, "firstname", max_length=200) or "",
        lastname=inputs.string(data, "lastname", max_length=200) or "",
        password=inputs.string(data, "password", max_length=1000),
        state=inputs.choice(data, "state", UserState) or UserState.ACTIVATED,
    )
    user = await run(request, command)
    return web.json_response(await user_json(request, user.id), status=201)


@routes.get("/api/v1/users")
async def list_users(request: web.Request) -> web.Response:
    actor = actor_of(request)
    policy.authorize(Action.READ_USERS, actor.role)
    limit = inputs.query_int(request, "limit", 100, minimum=1, maximum=1000)
    skip = inputs.query_int(request, "skip", 0, maximum=10_000_000)
    async with services_of(request).uow(actor) as uow:
        rows, total = await uow.users.page(actor.organization_id, email=request.query.get("email"),
                                           limit=limit, skip=skip)
        return web.json_response({"totalCount": total, "results": await views.users(uow, rows)})


@routes.get("/api/v1/users/{user_id}")
async def get_user(request: web.Request) -> web.Response:
    policy.authorize(Action.READ_USERS, actor_of(request).role)
    return web.json_response(await user_json(request, _uid(request)))


@routes.patch("/api/v1/users/{user_id}")
async def update_user(request: web.Request) -> web.Response:
    data = await inputs.json_body(request)
    unknown = set(data) - {"firstname", "lastname", "email", "username"}
    if unknown:
        raise bad_request("invalid_field", f"these fields cannot be changed here: {', '.join(sorted(unknown))}")
    if any(value is None for value in data.values()):
        raise bad_request("invalid_field", "fields cannot be set to null")
    changes = {name: inputs.required_string(data, name) for name in data}
    await run(request, c.UpdateUser(actor_of(request), _uid(request), changes))
    return web.json_response(await user_json(request, _uid(request)))


@routes.delete("/api/v1/users/{user_id}")
async def delete_user(request: web.Request) -> web.Response:
    await run(request, c.DeleteUser(actor_of(request), _uid(request)))
    return web.Response(status=204)


@routes.post("/api/v1/users/bulk-delete")
async def bulk_delete(request: web.Request) -> web.Response:
    data = await inputs.json_body(request)
    ids, count = data.get("ids"), data.get("confirm_count")
    if ids is None or count is None:
        raise bad_request("missing_field", "ids and confirm_count (the number of users being deleted) are required")
    if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
        raise bad_request("invalid_field", "ids must be a list of user ids")
    if not isinstance(count, int) or isinstance(count, bool):
        raise bad_request("invalid_field", "confirm_count must be an integer")
    deleted = await run(request, c.BulkDeleteUsers(actor_of(request), tuple(ids), count))
    return web.json_response({"deleted": deleted})


def _user_action(path: str, command: type[c.Command]) -> None:
    async def action(request: web.Request) -> web.Response:
        await run(request, command(actor_of(request), _uid(request)))  # type: ignore[call-arg]
        return web.json_response(await user_json(request, _uid(request)))

    action.__name__ = command.__name__
    routes.post(f"/api/v1/users/{{user_id}}/{path}")(action)


_user_action("suspend", c.SuspendUser)
_user_action("activate", c.ActivateUser)
_user_action("unlock", c.UnlockUser)
_user_action("expire-password", c.ForcePasswordReset)


@routes.put("/api/v1/users/{user_id}/password")
async def set_password(request: web.Request) -> web.Response:
    data = await inputs.json_body(request)
    password = inputs.required_string(data, "password", max_length=1000)
    await run(request, c.SetPassword(actor_of(request), _uid(request), password))
    return web.json_response(await user_json(request, _uid(request)))


@routes.put("/api/v1/users/{user_id}/password-authority")
async def password_authority(request: web.Request) -> web.Response:
    data = await inputs.json_body(request)
    authority = inputs.choice(data, "authority", PasswordAuthority, required=True)
    assert authority is not None
    await run(request, c.ChangePasswordAuthority(actor_of(request), _uid(request), authority))
    return web.json_response(await user_json(request, _uid(request)))


@routes.post("/api/v1/users/{user_id}/mfa/totp")
async def require_totp(request: web.Request) -> web.Response:
    """The user must enroll TOTP, in the user portal: an administrator never sees the secret."""
    await run(request, c.RequireTotp(actor_of(request), _uid(request)))
    return web.json_response(await user_json(request, _uid(request)))


@routes.post("/api/v1/users/{user_id}/mfa/totp/reset")
async def reset_totp(request: web.Request) -> web.Response:
    await run(request, c.ResetTotp(actor_of(request), _uid(request), require=True))
    return web.json_response(await user_json(request, _uid(request)))


@routes.delete("/api/v1/users/{user_id}/mfa/totp")
async def remove_totp(request: web.Request) -> web.Response:
    await run(request, c.ResetTotp(actor_of(request), _uid(request)))
    return web.Response(status=204)


@routes.put("/api/v1/users/{user_id}/mfa/required")
async def require_mfa(request: web.Request) -> web.Response:
    await run(request, c.SetMfaRequired(actor_of(request), _uid(request), True))
    return web.json_response(await user_json(request, _uid(request)))


@routes.delete("/api/v1/users/{user_id}/mfa/required")
async def remove_mfa_requirement(request: web.Request) -> web.Response:
    await run(request, c.SetMfaRequired(actor_of(request), _uid(request), False))
    return web.json_response(await user_json(request, _uid(request)))


@routes.delete("/api/v1/users/{user_id}/mfa/webauthn/{credential_id}")
async def delete_webauthn(request: web.Request) -> web.Response:
    credential = request.match_info["credential_id"]
    await run(request, c.DeleteWebauthnCredential(actor_of(request), _uid(request), credential))
    return web.Response(status=204)


@routes.delete("/api/v1/users/{user_id}/mfa/push/{device_id}")
async def delete_push(request: web.Request) -> web.Response:
    await run(request, c.DeletePushDevice(actor_of(request), _uid(request), request.match_info["device_id"]))
    return web.Response(status=204)


@routes.get("/api/v1/users/{user_id}/ssh-keys")
async def list_ssh_keys(request: web.Request) -> web.Response:
    actor = actor_of(request)
    policy.authorize(Action.READ_USERS, actor.role)
    async with services_of(request).uow(actor) as uow:
        user = await load_user(uow, _uid(request))
        rows = await uow.ssh_keys.of_user(actor.organization_id, user.id)
    return web.json_response({"results": [
        {"id": r.id, "name": r.name, "fingerprint": r.fingerprint, "public_key": r.public_key,
         "created": views.iso(r.created_at)} for r in rows
    ]})


@routes.post("/api/v1/users/{user_id}/ssh-keys")
async def add_ssh_key(request: web.Request) -> web.Response:
    data = await inputs.json_body(request)
    command = c.AddSshKey(actor_of(request), _uid(request), inputs.string(data, "name", max_length=200) or "",
                          inputs.required_string(data, "public_key", max_length=16_000))
    return web.json_response(await run(request, command), status=201)


@routes.delete("/api/v1/users/{user_id}/ssh-keys/{key_id}")
async def delete_ssh_key(request: web.Request) -> web.Response:
    await run(request, c.DeleteSshKey(actor_of(request), _uid(request), request.match_info["key_id"]))
    return web.Response(status=204)


# --- admins ----------------------------------------------------------------------------------


async def admin_json(request: web.Request, admin_id: str) -> dict[str, Any]:
    actor = actor_of(request)
    async with services_of(request).uow(actor) as uow:
        admin = await load_admin(uow, admin_id)
        match = None if admin.is_linked else await uow.users.by_email(actor.organization_id, admin.email)
        return views.admin(admin, match.id if match else None)


@routes.get("/api/v1/admins")
async def list_admins(request: web.Request) -> web.Response:
    actor = actor_of(request)
    policy.authorize(Action.READ_ADMINS, actor.role)
    async with services_of(request).uow(actor) as uow:
        return web.json_response({"results": await views.admins(uow, actor.organization_id)})


@routes.get("/api/v1/admins/{admin_id}")
async def get_admin(request: web.Request) -> web.Response:
    policy.authorize(Action.READ_ADMINS, actor_of(request).role)
    return web.json_response(await admin_json(request, request.match_info["admin_id"]))


@routes.post("/api/v1/admins")
async def create_admin(request: web.Request) -> web.Response:
    data = await inputs.json_body(request)
    role = inputs.choice(data, "role", Role, required=True)
    assert role is not None
    command = c.CreateAdmin(actor_of(request), inputs.required_string(data, "email"), role,
                            inputs.required_string(data, "password", max_length=1000),
                            bool(inputs.boolean(data, "api_access", False)))
    admin, totp_secret = await run(request, command)
    body = await admin_json(request, admin.id)
    body["totp_secret"] = totp_secret  # shown once
    return web.json_response(body, status=201)


@routes.post("/api/v1/admins/from-user")
async def create_admin_from_user(request: web.Request) -> web.Response:
    data = await inputs.json_body(request)
    role = inputs.choice(data, "role", Role, required=True)
    assert role is not None
    command = c.CreateAdminFromUser(
        actor_of(request), role, user_id=inputs.string(data, "user_id", max_length=64),
        email=inputs.string(data, "email"), api_access=bool(inputs.boolean(data, "api_access", False)),
    )
    admin = await run(request, command)
    return web.json_response(await admin_json(request, admin.id), status=201)


@routes.post("/api/v1/admins/{admin_id}/link-user")
async def link_user(request: web.Request) -> web.Response:
    data = await inputs.json_body(request)
    admin_id = request.match_info["admin_id"]
    await run(request, c.LinkAdminToUser(actor_of(request), admin_id, data.get("acknowledge")))
    return web.json_response(await admin_json(request, admin_id))


@routes.post("/api/v1/admins/{admin_id}/remove-access")
async def remove_access(request: web.Request) -> web.Response:
    data = await inputs.json_body(request)
    await run(request, c.RemoveAdminAccess(actor_of(request), request.match_info["admin_id"],
                                           data.get("acknowledge")))
    return web.Response(status=204)


@routes.patch("/api/v1/admins/{admin_id}")
async def update_admin(request: web.Request) -> web.Response:
    data = await inputs.json_body(request)
    unknown = set(data) - {"role", "api_access", "email"}
    if unknown:
        raise bad_request("invalid_field", f"these fields cannot be changed here: {', '.join(sorted(unknown))}")
    admin_id = request.match_info["admin_id"]
    command = c.UpdateAdmin(actor_of(request), admin_id, role=inputs.choice(data, "role", Role),
                            api_access=inputs.boolean(data, "api_access"), email=inputs.string(data, "email"))
    await run(request, command)
    return web.json_response(await admin_json(request, admin_id))


@routes.post("/api/v1/admins/{admin_id}/api-keys")
async def issue_api_key(request: web.Request) -> web.Response:
    issued = await run(request, c.IssueApiKey(actor_of(request), request.match_info["admin_id"]))
    return web.json_response(issued, status=201)


# --- integrations ----------------------------------------------------------------------------


@routes.post("/api/v1/integrations")
async def create_integration(request: web.Request) -> web.Response:
    data = await inputs.json_body(request)
    role = inputs.choice(data, "role", Role, required=True)
    assert role is not None
    command = c.CreateIntegration(
        actor_of(request), kind=inputs.required_string(data, "kind", max_length=20),
        name=inputs.required_string(data, "name", max_length=200), role=role,
        provider=inputs.string(data, "provider", max_length=40) or "generic",
        delete_mode=inputs.string(data, "delete_mode", max_length=20) or "suspend",
        secret=inputs.string(data, "secret", max_length=200),
    )
    return web.json_response(await run(request, command), status=201)


@routes.get("/api/v1/integrations")
async def list_integrations(request: web.Request) -> web.Response:
    actor = actor_of(request)
    policy.authorize(Action.MANAGE_INTEGRATIONS, actor.role)
    async with services_of(request).uow(actor) as uow:
        return web.json_response({"results": await integrations.list_integrations(uow)})


@routes.post("/api/v1/integrations/{integration_id}/rotate")
async def rotate_integration(request: web.Request) -> web.Response:
    data = await inputs.json_body(request)  # empty: adminlink makes the new secret
    command = c.RotateIntegrationCredential(actor_of(request), request.match_info["integration_id"],
                                            secret=inputs.string(data, "secret", max_length=200))
    return web.json_response(await run(request, command))


@routes.delete("/api/v1/integrations/{integration_id}")
async def delete_integration(request: web.Request) -> web.Response:
    await run(request, c.DeleteIntegration(actor_of(request), request.match_info["integration_id"]))
    return web.Response(status=204)


# --- policy and outbox -----------------------------------------------------------------------


@routes.post("/api/v1/policy/check")
async def check_policy(request: web.Request) -> web.Response:
    """Whether the caller may take an action on a user, and if not, which role it would need."""
    data = await inputs.json_body(request)
    action = inputs.choice(data, "action", Action, required=True)
    assert action is not None
    actor = actor_of(request)
    async with services_of(request).uow(actor) as uow:
        user = await load_user(uow, inputs.required_string(data, "user_id", max_length=64))
        has_admin = await uow.admins.by_linked_user(actor.organization_id, user.id) is not None
    decision = policy.decide(action, actor.role, has_admin)
    return web.json_response({
        "action": action.value, "user_id": user.id, "target_has_admin_role": has_admin,
        "role": actor.role.value, "allowed": decision.allowed, "required_role": decision.required_role.value,
    })


@routes.get("/api/v1/mail/outbox")
async def mail_outbox(request: web.Request) -> web.Response:
    actor = actor_of(request)
    policy.authorize(Action.READ_MAIL_OUTBOX, actor.role)
    limit = inputs.query_int(request, "limit", 100, minimum=1, maximum=1000)
    async with services_of(request).uow(actor) as uow:
        rows = await uow.outbox.recent(actor.organization_id, limit)
    return web.json_response({"results": [
        {"id": r.id, "to": r.recipient, "subject": r.subject, "body": r.body, "status": r.status,
         "created": views.iso(r.created_at), "sent": views.iso(r.sent_at)} for r in rows
    ]})
