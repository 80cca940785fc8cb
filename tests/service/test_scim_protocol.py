"""RFC 7644 over HTTP: authentication, discovery, errors, ETags, attribute selection, groups, and
bad input answered with a SCIM error that changes nothing."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from service.adapters import orm
from service.bootstrap import Services
from service.domain.model import Role
from tests.conftest import Api, Org, bootstrap_org
from tests.service.test_scim_support import (
    GROUP_SCHEMA,
    PATCH_SCHEMA,
    SCIM_JSON,
    USER_SCHEMA,
    Scim,
    records,
    scim_integration,
)

ERROR_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:Error"


async def test_a_missing_wrong_or_rotated_token_answers_401_with_a_scim_error(api: Api) -> None:
    scim = await scim_integration(api)
    response = await api.client.get("/scim/v2/Users")
    assert response.status == 401 and response.content_type == SCIM_JSON
    assert (await response.json())["schemas"] == [ERROR_SCHEMA]
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    wrong = Scim(api.client, scim.token + "x", scim.integration)
    assert (await wrong.call("GET", "/Users"))[0] == 401
    rotated = await api.ok("POST", f"/api/v1/integrations/{scim.integration['id']}/rotate")
    assert (await scim.call("GET", "/Users"))[0] == 401
    assert (await Scim(api.client, rotated["token"], scim.integration).call("GET", "/Users"))[0] == 200
    await api.ok("DELETE", f"/api/v1/integrations/{scim.integration['id']}")
    assert (await Scim(api.client, rotated["token"], scim.integration).call("GET", "/Users"))[0] == 401


async def test_integrations_see_only_their_own_organization(api: Api, services: Services, client: Any) -> None:
    scim = await scim_integration(api)
    other_org = await bootstrap_org(services, "Other")
    other = await scim_integration(Api(client, other_org.key))
    user = await scim.create_user()
    assert (await other.call("GET", f"/Users/{user['id']}"))[0] == 404
    assert (await other.call("PATCH", f"/Users/{user['id']}", {"schemas": [PATCH_SCHEMA], "Operations": [
        {"op": "replace", "path": "active", "value": False}]}))[0] == 404
    listed = await other.ok("GET", f'/Users?filter=userName%20eq%20%22{user["userName"]}%22')
    assert listed["totalResults"] == 0


async def test_discovery(api: Api) -> None:
    scim = await scim_integration(api)
    config = await scim.ok("GET", "/ServiceProviderConfig")
    assert config["patch"]["supported"] and config["etag"]["supported"] and config["filter"]["maxResults"] == 1000
    types = await scim.ok("GET", "/ResourceTypes")
    assert {t["id"] for t in types["Resources"]} == {"User", "Group"}
    schemas = await scim.ok("GET", "/Schemas")
    assert USER_SCHEMA in {s["id"] for s in schemas["Resources"]}
    user_schema = await scim.ok("GET", f"/Schemas/{USER_SCHEMA}")
    emails = next(a for a in user_schema["attributes"] if a["name"] == "emails")
    # Required, as every client that follows the schema can meet; the description tells that a
    # userName that is an email address stands in for it (Entra ID without mail).
    assert emails["required"] is True
    assert "without emails takes its userName when that is an email address" in emails["description"]
    for path in ("/ServiceProviderConfig", "/ResourceTypes", "/Schemas"):
        for method in ("POST", "PUT", "PATCH", "DELETE"):
            status, body = await scim.call(method, path)
            assert status == 405 and body["schemas"] == [ERROR_SCHEMA], (method, path)
    assert (await scim.call("GET", "/Schemas/urn:nothing"))[0] == 404
    assert (await scim.call("GET", "/ResourceTypes/Pet"))[0] == 404
    status, body = await scim.call("GET", "/Nothing/here")
    assert status == 404 and body["schemas"] == [ERROR_SCHEMA]


async def test_etags_guard_writes(api: Api) -> None:
    scim = await scim_integration(api)
    user = await scim.create_user()
    version = user["meta"]["version"]
    assert version.startswith('W/"')
    response = await api.client.get(f"/scim/v2/Users/{user['id']}", headers={
        "Authorization": f"Bearer {scim.token}", "If-None-Match": version})
    assert response.status == 304
    rename = {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "path": "displayName", "value": "A"}]}
    status, body = await scim.call("PATCH", f"/Users/{user['id']}", rename, **{"If-Match": 'W/"stale"'})
    assert status == 412 and body["schemas"] == [ERROR_SCHEMA]
    changed = await scim.ok("PATCH", f"/Users/{user['id']}", rename, **{"If-Match": version})
    assert changed["displayName"] == "A" and changed["meta"]["version"] != version
    status, _ = await scim.call("DELETE", f"/Users/{user['id']}", **{"If-Match": version})
    assert status == 412
    status, _ = await scim.call("PUT", f"/Users/{user['id']}", {**user, "displayName": "B"},
                                **{"If-Match": version})
    assert status == 412
    assert (await scim.ok("GET", f"/Users/{user['id']}"))["displayName"] == "A"


async def test_a_management_api_change_moves_the_etag_and_last_modified(api: Api) -> None:
    scim = await scim_integration(api)
    user = await scim.create_user()
    await api.ok("POST", f"/api/v1/users/{user['id']}/suspend")
    after = await scim.ok("GET", f"/Users/{user['id']}")
    assert after["active"] is False
    assert after["meta"]["version"] != user["meta"]["version"]
    assert after["meta"]["lastModified"] > user["meta"]["lastModified"]


async def test_attributes_and_excluded_attributes(api: Api) -> None:
    scim = await scim_integration(api)
    user = await scim.create_user(displayName="Shown", title="Hidden")
    only = await scim.ok("GET", f"/Users/{user['id']}?attributes=userName")
    assert set(only) <= {"schemas", "id", "userName", "meta"} and only["userName"] == user["userName"]
    without = await scim.ok("GET", f"/Users/{user['id']}?excludedAttributes=title,emails")
    assert "title" not in without and "emails" not in without and without["displayName"] == "Shown"
    listed = await scim.ok("POST", "/Users/.search", {
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
        "filter": f'userName eq "{user["userName"]}"', "attributes": ["displayName"]})
    assert listed["Resources"][0]["displayName"] == "Shown" and "title" not in listed["Resources"][0]


async def test_bad_input_is_a_4xx_that_changes_nothing(api: Api, services: Services) -> None:
    scim = await scim_integration(api)
    user = await scim.create_user()
    before = await scim.ok("GET", f"/Users/{user['id']}")
    response = await api.client.post("/scim/v2/Users", data=b"{not json", headers={
        "Authorization": f"Bearer {scim.token}", "Content-Type": SCIM_JSON})
    assert response.status == 400 and (await response.json())["scimType"] == "invalidSyntax"
    cases: list[tuple[str, str, Any]] = [
        ("POST", "/Users", {"schemas": [USER_SCHEMA], "userName": "x" * 201, "emails": [{"value": "a@example.com"}]}),
        ("POST", "/Users", {"schemas": [USER_SCHEMA], "userName": "no-email"}),
        ("POST", "/Users", {"schemas": [USER_SCHEMA], "userName": "nul\u0000", "emails": [{"value": "b@example.com"}]}),
        ("POST", "/Users", {"schemas": [USER_SCHEMA], "userName": "bad", "emails": [{"value": "not an email"}]}),
        ("POST", "/Users", ["a list"]),
        ("PATCH", f"/Users/{user['id']}", {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "jump"}]}),
        ("PATCH", f"/Users/{user['id']}", {"schemas": [PATCH_SCHEMA], "Operations": [
            {"op": "replace", "path": "userName", "value": None}]}),
        ("PATCH", f"/Users/{user['id']}", {"schemas": [PATCH_SCHEMA], "Operations": [
            {"op": "replace", "path": "id", "value": "x"}]}),
        ("GET", "/Users?startIndex=abc", None),
        ("GET", "/Users?sortBy=active", None),
        ("GET", "/Users?sortBy=nickName", None),
    ]
    for method, path, body in cases:
        status, answer = await scim.call(method, path, body)
        assert 400 <= status < 500, (method, path, status, answer)
        assert answer["schemas"] == [ERROR_SCHEMA], answer
    assert (await scim.call("GET", "/Users/not-an-id"))[0] == 404
    assert (await scim.call("PUT", "/Users"))[0] == 405
    assert await scim.ok("GET", f"/Users/{user['id']}") == before
    async with services.session_factory() as session:
        count = await session.scalar(sa.select(sa.func.count()).select_from(orm.users).where(
            orm.users.c.username.in_(["no-email", "bad", "x" * 201])))
    assert count == 0


async def test_a_username_that_differs_only_in_case_is_a_rename_of_the_same_user(api: Api) -> None:
    scim = await scim_integration(api)
    user = await scim.create_user("Case.User@example.com")
    renamed = await scim.ok("PATCH", f"/Users/{user['id']}", {"schemas": [PATCH_SCHEMA], "Operations": [
        {"op": "replace", "path": "userName", "value": "case.user@example.com"}]})
    assert renamed["userName"] == "case.user@example.com"
    other = await scim.create_user()
    status, body = await scim.call("PATCH", f"/Users/{other['id']}", {"schemas": [PATCH_SCHEMA], "Operations": [
        {"op": "replace", "path": "userName", "value": "CASE.user@example.com"}]})
    assert status == 409 and body["scimType"] == "uniqueness"


async def test_groups_lifecycle(api: Api, services: Services, org: Org) -> None:
    scim = await scim_integration(api)
    first, second = await scim.create_user(), await scim.create_user()
    status, group = await scim.call("POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "Engineering",
                                                        "externalId": "g-1", "members": [{"value": first["id"]}]})
    assert status == 201 and group["members"][0]["$ref"].endswith(f"/Users/{first['id']}")
    status, duplicate = await scim.call("POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "ENGINEERING"})
    assert status == 409 and duplicate["scimType"] == "uniqueness"
    status, missing = await scim.call("POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "Other",
                                                          "members": [{"value": "0" * 32}]})
    assert status == 400 and missing["scimType"] == "invalidValue"
    replaced = await scim.ok("PUT", f"/Groups/{group['id']}", {
        "schemas": [GROUP_SCHEMA], "displayName": "Engineering", "members": [{"value": second["id"]}]})
    assert [m["value"] for m in replaced["members"]] == [second["id"]] and "externalId" not in replaced
    found = await scim.ok("GET", '/Groups?filter=displayName%20eq%20%22engineering%22')
    assert [g["id"] for g in found["Resources"]] == [group["id"]]
    in_group = await scim.ok("GET", f'/Users?filter=groups%20eq%20%22{group["id"]}%22')
    assert [u["id"] for u in in_group["Resources"]] == [second["id"]]
    both = await scim.ok("POST", "/.search", {"schemas": ["urn:ietf:params:scim:api:messages:2.0:SearchRequest"],
                                              "filter": 'displayName eq "Engineering"'})
    assert [r["id"] for r in both["Resources"]] == [group["id"]]
    assert (await scim.call("DELETE", f"/Groups/{group['id']}"))[0] == 204
    assert (await scim.call("GET", f"/Groups/{group['id']}"))[0] == 404
    events = [r["event_type"] for r in await records(services, org.id) if r["resource"]["id"] == group["id"]]
    assert events == ["group_create", "group_update", "group_delete"]


async def test_a_help_desk_integration_manages_groups_and_read_only_cannot(api: Api) -> None:
    help_desk = await scim_integration(api, Role.HELP_DESK)
    read_only = await scim_integration(api, Role.READ_ONLY)
    group = await help_desk.ok("POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "Desk"})
    assert (await read_only.ok("GET", f"/Groups/{group['id']}"))["displayName"] == "Desk"
    assert (await read_only.call("DELETE", f"/Groups/{group['id']}"))[0] == 403
