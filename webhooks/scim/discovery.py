"""Discovery (RFC 7644 §4): ServiceProviderConfig, ResourceTypes and Schemas."""

from __future__ import annotations

from aiohttp import web
from scim2_models import Context

from webhooks.scim.errors import ScimError, scim_json
from webhooks.scim.http import Caller, base_url
from webhooks.scim.schema import resource_type_json, resource_types, schema_json, schemas, service_provider_config

LIST_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:ListResponse"


def _listed(resources: list[dict[str, object]]) -> dict[str, object]:
    return {"schemas": [LIST_SCHEMA], "totalResults": len(resources), "startIndex": 1,
            "itemsPerPage": len(resources), "Resources": resources}


async def get_service_provider_config(request: web.Request, caller: Caller) -> web.Response:
    config = service_provider_config(base_url(request))
    return scim_json(config.model_dump(scim_ctx=Context.RESOURCE_QUERY_RESPONSE))


async def get_resource_types(request: web.Request, caller: Caller) -> web.Response:
    base = base_url(request)
    return scim_json(_listed([resource_type_json(r, base) for r in resource_types()]))


async def get_resource_type(request: web.Request, caller: Caller) -> web.Response:
    wanted = request.match_info["id"]
    for resource_type in resource_types():
        if resource_type.id == wanted:
            return scim_json(resource_type_json(resource_type, base_url(request)))
    raise ScimError(404, f"no resource type {wanted!r}")


async def get_schemas(request: web.Request, caller: Caller) -> web.Response:
    base = base_url(request)
    return scim_json(_listed([schema_json(s, base) for s in schemas()]))


async def get_schema(request: web.Request, caller: Caller) -> web.Response:
    wanted = request.match_info["id"]
    for schema in schemas():
        if schema.id == wanted:
            return scim_json(schema_json(schema, base_url(request)))
    raise ScimError(404, f"no schema {wanted!r}")
