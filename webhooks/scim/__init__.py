"""The SCIM 2.0 service provider under ``/scim/v2`` (RFC 7643 / 7644).

SCIM providers (Okta, Microsoft Entra ID, OneLogin) authenticate with the bearer token of a SCIM
integration and act with that integration's admin role and name. Reads are SQL queries; every
write is a command on the message bus, handled by ``service.provisioning`` through the same
handlers as the management API.
"""

from __future__ import annotations

from aiohttp import web

from webhooks.scim import discovery, groups, search, users
from webhooks.scim.errors import ScimError
from webhooks.scim.http import BASE, Caller, ScimHandler, endpoint

routes = web.RouteTableDef()


def _refuse(status: int, detail: str, allowed: str | None = None) -> ScimHandler:
    async def refuse(request: web.Request, caller: Caller) -> web.Response:
        raise ScimError(status, detail, headers={"Allow": allowed} if allowed else None)

    return refuse


# path -> the methods it answers; any other method answers 405 with a SCIM error body. Order
# matters: "/Users/.search" before "/Users/{id}", and the catch-all last.
PATHS: list[tuple[str, dict[str, ScimHandler]]] = [
    ("/ServiceProviderConfig", {"GET": discovery.get_service_provider_config}),
    ("/ResourceTypes", {"GET": discovery.get_resource_types}),
    ("/ResourceTypes/{id}", {"GET": discovery.get_resource_type}),
    ("/Schemas", {"GET": discovery.get_schemas}),
    ("/Schemas/{id}", {"GET": discovery.get_schema}),
    ("/Users", {"GET": users.get_users, "POST": users.create_user}),
    ("/Users/.search", {"POST": users.search_users}),
    ("/Users/{id}", {"GET": users.get_user, "PUT": users.replace_user, "PATCH": users.patch_user,
                     "DELETE": users.delete_user}),
    ("/Groups", {"GET": groups.get_groups, "POST": groups.create_group}),
    ("/Groups/.search", {"POST": groups.search_groups}),
    ("/.search", {"POST": search.search_all}),
    ("/Groups/{id}", {"GET": groups.get_group, "PUT": groups.replace_group, "PATCH": groups.patch_group,
                      "DELETE": groups.delete_group}),
]

for path, methods in PATHS:
    for method, handler in methods.items():
        routes.route(method, BASE + path)(endpoint(handler))
    allowed = ", ".join(methods)
    routes.route("*", BASE + path)(endpoint(_refuse(405, f"this endpoint answers {allowed}", allowed)))

routes.route("*", BASE + "/{tail:.*}")(endpoint(_refuse(404, "no such SCIM endpoint")))
