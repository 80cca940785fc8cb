"""``POST /scim/v2/.search`` (RFC 7644 §3.4.3): one query over users and groups.

An attribute one resource type does not have makes the filter false for that type (§3.4.2.1);
an attribute neither has is an invalidFilter. Results list the users, then the groups, each in
its own fixed order, and are paged over that sequence.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from aiohttp import web
from scim2_models import Group

from service import policy
from service.adapters.scim_directory import ListQuery
from service.http.context import services_of
from service.policy import Action
from webhooks.scim.errors import scim_json
from webhooks.scim.http import Caller, base_url, json_body
from webhooks.scim.listing import list_body, search_request
from webhooks.scim.resources import group_resource, user_resource
from webhooks.scim.schema import UserModel


def _counting(query: ListQuery) -> ListQuery:
    return replace(query, start_index=1, count=0)


async def search_all(request: web.Request, caller: Caller) -> web.Response:
    policy.authorize(Action.READ_USERS, caller.actor.role)
    query, parameters = search_request(await json_body(request))
    base = base_url(request)
    resources: list[Any] = []
    async with services_of(request).scim_directory(caller.actor.organization_id) as directory:
        on_users = directory.refusal(query, "User")
        on_groups = directory.refusal(query, "Group")
        if on_users is not None and on_groups is not None:
            raise on_users
        users_total = 0
        if on_users is None:
            users_total, users = await directory.users(query)
            resources += [user_resource(r, base) for r in users]
        groups_total = 0
        if on_groups is None:
            room = query.count - len(resources)
            start = max(query.start_index - users_total, 1)
            groups_query = replace(query, start_index=start, count=room) if room > 0 else _counting(query)
            groups_total, groups = await directory.groups(groups_query, with_members=True)
            resources += [group_resource(r, base) for r in groups]
    model = UserModel | Group
    return scim_json(list_body(model, users_total + groups_total, query, resources, parameters))
