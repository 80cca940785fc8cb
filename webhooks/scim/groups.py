"""``/scim/v2/Groups``: the groups providers push, with their members (adminlink users)."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from scim2_models import Context, Group, PatchOp, ResponseParameters

from service import policy
from service.adapters.scim_directory import GroupRecord
from service.domain import commands as c
from service.http.context import services_of
from service.policy import Action
from webhooks.scim.errors import ScimError, scim_json
from webhooks.scim.http import Caller, apply_patch, base_url, check_if_match, json_body, not_modified, resource_id
from webhooks.scim.listing import list_body, response_parameters, search_request
from webhooks.scim.resources import dump, group_resource, members_of
from webhooks.scim.schema import POLICY


def _wants_members(parameters: ResponseParameters) -> bool:
    """Entra ID reads groups with excludedAttributes=members: then members are not even loaded."""
    excluded = [str(a).lower() for a in parameters.excluded_attributes or []]
    included = [str(a).lower() for a in parameters.attributes or []]
    if any(a.endswith("members") for a in excluded):
        return False
    return not included or any("members" in a for a in included)


async def _record(request: web.Request, caller: Caller, group_id: str, with_members: bool = True) -> GroupRecord:
    async with services_of(request).scim_directory(caller.actor.organization_id) as directory:
        record = await directory.group(group_id, with_members)
    if record is None:
        raise ScimError(404, f"no group with id {group_id}")
    return record


def _answer(request: web.Request, record: GroupRecord, parameters: ResponseParameters | None = None,
            status: int = 200) -> web.Response:
    base = base_url(request)
    headers = {"ETag": record.version}
    if status == 201:
        headers["Location"] = f"{base}/Groups/{record.row.id}"
    return scim_json(dump(group_resource(record, base), parameters), status, headers)


def _parsed(body: dict[str, Any], context: Context) -> tuple[str, str | None, tuple[str, ...]]:
    group = Group.model_validate(body, scim_ctx=context, scim_policy=POLICY)
    if not isinstance(group.display_name, str):
        raise ScimError(400, "displayName is required", "invalidValue")
    return group.display_name, _external_id(group.external_id), members_of(group)


def _external_id(value: object) -> str | None:
    external_id = value.strip() if isinstance(value, str) else None
    if external_id is not None and len(external_id) > 300:
        raise ScimError(400, "externalId is longer than 300 characters", "invalidValue")
    return external_id or None


async def list_groups(request: web.Request, caller: Caller, params: dict[str, Any]) -> web.Response:
    policy.authorize(Action.READ_USERS, caller.actor.role)
    query, parameters = search_request(params)
    async with services_of(request).scim_directory(caller.actor.organization_id) as directory:
        total, records = await directory.groups(query, _wants_members(parameters))
    base = base_url(request)
    return scim_json(list_body(Group, total, query, [group_resource(r, base) for r in records], parameters))


async def get_groups(request: web.Request, caller: Caller) -> web.Response:
    return await list_groups(request, caller, dict(request.query))


async def search_groups(request: web.Request, caller: Caller) -> web.Response:
    return await list_groups(request, caller, await json_body(request))


async def get_group(request: web.Request, caller: Caller) -> web.StreamResponse:
    policy.authorize(Action.READ_USERS, caller.actor.role)
    parameters = response_parameters(request.query)
    record = await _record(request, caller, resource_id(request), _wants_members(parameters))
    if not_modified(request, record.version):
        return web.Response(status=304, headers={"ETag": record.version})
    return _answer(request, record, parameters)


async def create_group(request: web.Request, caller: Caller) -> web.Response:
    parameters = response_parameters(request.query)
    name, external_id, members = _parsed(await json_body(request), Context.RESOURCE_CREATION_REQUEST)
    group_id = await services_of(request).bus.handle(c.ProvisionGroup(caller.actor, name, external_id, members))
    return _answer(request, await _record(request, caller, group_id), parameters, 201)


async def replace_group(request: web.Request, caller: Caller) -> web.Response:
    group_id, parameters = resource_id(request), response_parameters(request.query)
    name, external_id, members = _parsed(await json_body(request), Context.RESOURCE_REPLACEMENT_REQUEST)
    current = await _record(request, caller, group_id)
    expected = check_if_match(request, current.version)
    await services_of(request).bus.handle(c.ReplaceProvisionedGroup(
        caller.actor, group_id, name, external_id, members, expected_version=expected))
    return _answer(request, await _record(request, caller, group_id), parameters)


async def patch_group(request: web.Request, caller: Caller) -> web.Response:
    group_id, parameters = resource_id(request), response_parameters(request.query)
    patch = PatchOp[Group].model_validate(await json_body(request), scim_ctx=Context.RESOURCE_PATCH_REQUEST,
                                          scim_policy=POLICY)
    def replacement(current: GroupRecord) -> c.Command:
        resource = group_resource(current, base_url(request))
        patch.patch(resource, scim_policy=POLICY)
        if not isinstance(resource.display_name, str):
            raise ScimError(400, "displayName is required", "mutability")
        return c.ReplaceProvisionedGroup(caller.actor, group_id, resource.display_name,
                                         _external_id(resource.external_id), members_of(resource),
                                         expected_version=current.version)

    await apply_patch(request, lambda: _record(request, caller, group_id), replacement)
    return _answer(request, await _record(request, caller, group_id), parameters)


async def delete_group(request: web.Request, caller: Caller) -> web.Response:
    group_id = resource_id(request)
    current = await _record(request, caller, group_id)
    expected = check_if_match(request, current.version)
    await services_of(request).bus.handle(c.DeleteProvisionedGroup(caller.actor, group_id, expected))
    return web.Response(status=204)
