"""Hostile input answers a clear 4xx and changes nothing: deep nesting, out-of-range dates and
numbers, and a SCIM re-create that would bypass the permission table."""

from __future__ import annotations

from aiohttp.test_utils import TestClient

from service.api.context import SERVICES
from service.domain.model import Role
from tests.conftest import Api, Org, enroll_totp_as_the_user
from tests.service.test_scim_support import scim_integration

DEEP = b"[" * 100_000


async def test_deeply_nested_json_is_a_400(api: Api, client: TestClient) -> None:
    response = await client.post("/api/v1/users", data=DEEP, headers={"x-api-key": api.key})
    assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_json"
    scim = await scim_integration(api)
    response = await client.post("/scim/v2/Users", data=DEEP, headers={"Authorization": f"Bearer {scim.token}"})
    assert response.status == 400 and (await response.json())["scimType"] == "invalidSyntax"


async def test_nul_characters_are_a_400_and_change_nothing(api: Api, client: TestClient) -> None:
    """PostgreSQL text cannot hold NUL: refused on reading, never a database error."""
    before = await api.get("/api/v1/users")
    for body in ({"email": "nul\x00@acme.test", "username": "nul", "password": "a long user password"},
                 {"email": "nul@acme.test", "username": "nul", "password": "a long user password", "x\x00": 1},
                 {"email": "half\ud800@acme.test", "username": "half", "password": "a long user password"}):
        status, answer = await api.post("/api/v1/users", body)
        assert (status, answer["error"]["code"]) == (400, "invalid_json"), answer
    response = await client.post("/api/v1/users", data=b'{"email": "n@acme.test", "failed": NaN}',
                                 headers={"x-api-key": api.key})
    assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_json"
    search = {"and": {"resource.email": "\x00"}}
    status, answer = await api.post("/insights/directory/v1/events",
                                    {"service": ["all"], "start_time": "2020-01-01T00:00:00Z", "search_term": search})
    assert (status, answer["error"]["code"]) == (400, "invalid_json")
    assert await api.get("/api/v1/users") == before


async def test_out_of_range_times_are_a_400(api: Api, org: Org) -> None:
    body = {"service": ["all"], "start_time": "0001-01-01T00:00:00+01:00"}
    status, answer = await api.post("/insights/directory/v1/events", body)
    assert (status, answer["error"]["code"]) == (400, "invalid_time")
    body = {"service": ["all"], "start_time": "2020-01-01T00:00:00Z", "search_after": ["Infinity", "x"]}
    status, answer = await api.post("/insights/directory/v1/events", body)
    assert (status, answer["error"]["code"]) == (400, "invalid_search_after")
    scim = await scim_integration(api)
    status, answer = await scim.call("GET", '/Users?filter=meta.created%20gt%20%220001-01-01T00:00:00%2B01:00%22')
    assert status == 400 and answer["scimType"] == "invalidFilter"
    status, _ = await scim.call("GET", f"/Users?startIndex={10**20}")
    assert status == 200


async def test_a_scim_re_create_checks_the_permission_table(api: Api, org: Org) -> None:
    billing = await scim_integration(api, Role.BILLING, delete_mode="suspend")
    help_desk = await scim_integration(api, Role.HELP_DESK, delete_mode="suspend")
    created = await billing.create_user()
    status, _ = await billing.call("DELETE", f"/Users/{created['id']}")
    assert status == 204
    await api.ok("POST", f"/api/v1/users/{created['id']}/activate")
    await api.ok("PUT", f"/api/v1/users/{created['id']}/password", {"password": "a long user password 1"})
    await enroll_totp_as_the_user(api.client.app[SERVICES], created["id"])
    await api.admin_from_user({"id": created["id"]}, Role.ADMINISTRATOR)
    await api.ok("POST", f"/api/v1/users/{created['id']}/suspend")
    status, answer = await help_desk.call("POST", "/Users", {
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"], "userName": created["userName"],
        "emails": created["emails"], "name": created["name"], "active": False})
    assert status == 403, answer
    status, _ = await billing.call("GET", f"/Users/{created['id']}")
    assert status == 404  # still hidden from SCIM: the refused re-create changed nothing
