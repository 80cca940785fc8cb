"""``/scim/v2/Users``: RFC 7644 operations on adminlink users, each write a command on the bus."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from scim2_models import Context, PatchOp, ResponseParameters

from service import policy
from service.adapters.scim_directory import UserRecord
from service.domain import commands as c
from service.domain.errors import DomainError
from service.handlers.common import validate_password
from service.http.context import services_of
from service.policy import Action
from webhooks.scim import quirks
from webhooks.scim.errors import ScimError, scim_json
from webhooks.scim.http import Caller, apply_patch, base_url, check_if_match, json_body, not_modified, resource_id
from webhooks.scim.listing import list_body, response_parameters, search_request
from webhooks.scim.resources import dump, profile_from_user, user_resource
from webhooks.scim.schema import POLICY, UserModel

# A PATCH computed from a state that another request changed meanwhile is computed again.


async def _record(request: web.Request, caller: Caller, user_id: str) -> UserRecord:
    async with services_of(request).scim_directory(caller.actor.organization_id) as directory:
        record = await directory.user(user_id)
    if record is None:
        raise ScimError(404, f"no user with id {user_id}")
    return record


def _answer(request: web.Request, record: UserRecord, parameters: ResponseParameters | None = None,
            status: int = 200) -> web.Response:
    base = base_url(request)
    headers = {"ETag": record.version}
    if status == 201:
        headers["Location"] = f"{base}/Users/{record.row.id}"
    return scim_json(dump(user_resource(record, base), parameters), status, headers)


def _full_representation_password(password: str | None, email: str) -> str | None:
    """POST and PUT carry a whole user, and providers put a generated placeholder in its password
    (Okta does when it does not manage passwords). One that adminlink's password policy refuses
    is not set; a PATCH of the password is a deliberate change and is checked as such."""
    if password is None:
        return None
    try:
        return validate_password(password, email)
    except DomainError:
        return None


async def list_users(request: web.Request, caller: Caller, params: dict[str, Any]) -> web.Response:
    policy.authorize(Action.READ_USERS, caller.actor.role)
    query, parameters = search_request(params)
    async with services_of(request).scim_directory(caller.actor.organization_id) as directory:
        total, records = await directory.users(query)
    base = base_url(request)
    resources = [user_resource(r, base) for r in records]
    return scim_json(list_body(UserModel, total, query, resources, parameters))


async def get_users(request: web.Request, caller: Caller) -> web.Response:
    return await list_users(request, caller, dict(request.query))


async def search_users(request: web.Request, caller: Caller) -> web.Response:
    return await list_users(request, caller, await json_body(request))


async def get_user(request: web.Request, caller: Caller) -> web.StreamResponse:
    policy.authorize(Action.READ_USERS, caller.actor.role)
    parameters = response_parameters(request.query)
    record = await _record(request, caller, resource_id(request))
    if not_modified(request, record.version):
        return web.Response(status=304, headers={"ETag": record.version})
    return _answer(request, record, parameters)


async def create_user(request: web.Request, caller: Caller) -> web.Response:
    parameters = response_parameters(request.query)
    body = quirks.resource_body(await json_body(request))
    resource = UserModel.model_validate(body, scim_ctx=Context.RESOURCE_CREATION_REQUEST, scim_policy=POLICY)
    wanted, password = profile_from_user(resource)
    password = _full_representation_password(password, wanted.email)
    user = await services_of(request).bus.handle(c.ProvisionUser(caller.actor, wanted, password))
    return _answer(request, await _record(request, caller, user.id), parameters, 201)


async def replace_user(request: web.Request, caller: Caller) -> web.Response:
    user_id, parameters = resource_id(request), response_parameters(request.query)
    body = quirks.resource_body(await json_body(request))
    resource = UserModel.model_validate(body, scim_ctx=Context.RESOURCE_REPLACEMENT_REQUEST, scim_policy=POLICY)
    wanted, password = profile_from_user(resource)
    password = _full_representation_password(password, wanted.email)
    current = await _record(request, caller, user_id)
    expected = check_if_match(request, current.version)
    command = c.ReplaceProvisionedUser(caller.actor, user_id, wanted, password, expected_version=expected)
    await services_of(request).bus.handle(command)
    return _answer(request, await _record(request, caller, user_id), parameters)


async def patch_user(request: web.Request, caller: Caller) -> web.Response:
    user_id, parameters = resource_id(request), response_parameters(request.query)
    body = quirks.patch_body(await json_body(request))
    patch = PatchOp[UserModel].model_validate(body, scim_ctx=Context.RESOURCE_PATCH_REQUEST,
                                              scim_policy=POLICY)
    def replacement(current: UserRecord) -> c.Command:
        resource = user_resource(current, base_url(request))
        patch.patch(resource, scim_policy=POLICY)
        wanted, password = profile_from_user(resource)
        return c.ReplaceProvisionedUser(caller.actor, user_id, wanted, password, expected_version=current.version)

    await apply_patch(request, lambda: _record(request, caller, user_id), replacement)
    return _answer(request, await _record(request, caller, user_id), parameters)


async def delete_user(request: web.Request, caller: Caller) -> web.Response:
    user_id = resource_id(request)
    current = await _record(request, caller, user_id)
    expected = check_if_match(request, current.version)
    command = c.DeprovisionUser(caller.actor, user_id, caller.delete_mode, expected_version=expected)
    await services_of(request).bus.handle(command)
    return web.Response(status=204)
