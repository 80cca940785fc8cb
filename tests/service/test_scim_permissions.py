"""SCIM writes take the management API's path: the integration's admin role is checked against the
permission table, sessions end, emails go out, and Directory Insights records name the integration."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from service.adapters import orm
from service.bootstrap import Services
from service.domain.model import Role
from tests.conftest import Api, Org
from tests.service.test_scim_support import PATCH_SCHEMA, Scim, records, scim_integration


def deactivate(active: bool = False) -> dict[str, Any]:
    return {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "value": {"active": active}}]}


async def user_state(services: Services, user_id: str) -> tuple[str, int]:
    async with services.session_factory() as session:
        row = (await session.execute(sa.select(orm.users.c.state, orm.users.c.auth_epoch).where(
            orm.users.c.id == user_id))).one()
    return row.state.value, row.auth_epoch


async def admin_role_user(api: Api, role: Role = Role.HELP_DESK) -> dict[str, Any]:
    user = await api.user()
    await api.admin_from_user(user, role)
    return user


def scim_records(all_records: list[dict[str, Any]], scim: Scim, user_id: str, event_type: str) -> list[dict]:
    return [r for r in all_records if r["event_type"] == event_type and r["resource"]["id"] == user_id
            and r["initiated_by"]["id"] == scim.integration["id"]]


async def test_a_non_billing_integration_suspends_a_plain_user_but_not_an_admin_role_user(
        api: Api, services: Services, org: Org) -> None:
    scim = await scim_integration(api, Role.ADMINISTRATOR)
    plain = await api.user()
    holder = await admin_role_user(api)
    _, epoch_before = await user_state(services, holder["id"])

    status, refused = await scim.call("PATCH", f"/Users/{holder['id']}", deactivate())
    assert status == 403
    assert refused["schemas"] == ["urn:ietf:params:scim:api:messages:2.0:Error"]
    assert "Administrator with Billing" in refused["detail"]
    assert await user_state(services, holder["id"]) == ("ACTIVATED", epoch_before)

    suspended = await scim.ok("PATCH", f"/Users/{plain['id']}", deactivate())
    assert suspended["active"] is False
    state, epoch = await user_state(services, plain["id"])
    assert state == "SUSPENDED" and epoch == 1  # the user's sessions end at commit

    kept = await records(services, org.id)
    denied = scim_records(kept, scim, holder["id"], "user_suspended")
    allowed = scim_records(kept, scim, plain["id"], "user_suspended")
    assert [r["success"] for r in denied] == [False] and [r["success"] for r in allowed] == [True]
    for record in denied + allowed:
        assert record["initiated_by"]["source"] == "scim"
        assert record["initiated_by"]["name"] == scim.integration["name"]
        assert record["initiated_by"]["type"] == "integration"
        assert record["auth_method"] == "bearer_token"


async def test_a_non_billing_integration_cannot_activate_or_set_the_password_of_an_admin_role_user(
        api: Api, services: Services, org: Org) -> None:
    scim = await scim_integration(api, Role.MANAGER)
    holder = await admin_role_user(api)
    await api.ok("POST", f"/api/v1/users/{holder['id']}/suspend")
    status, _ = await scim.call("PATCH", f"/Users/{holder['id']}", deactivate(True))
    assert status == 403
    status, _ = await scim.call("PATCH", f"/Users/{holder['id']}", {"schemas": [PATCH_SCHEMA], "Operations": [
        {"op": "replace", "path": "password", "value": "a brand new password 1"}]})
    assert status == 403
    assert (await user_state(services, holder["id"]))[0] == "SUSPENDED"
    kept = await records(services, org.id)
    assert [r["success"] for r in scim_records(kept, scim, holder["id"], "user_unsuspended")] == [False]
    assert [r["success"] for r in scim_records(kept, scim, holder["id"], "user_update")] == [False]
    # No secret in any record.
    assert "a brand new password 1" not in str(kept)


async def test_a_billing_integration_suspends_an_admin_role_user_and_ends_the_admin_sessions(
        api: Api, services: Services) -> None:
    scim = await scim_integration(api, Role.BILLING)
    holder = await admin_role_user(api)
    await scim.ok("PATCH", f"/Users/{holder['id']}", deactivate())
    assert (await user_state(services, holder["id"]))[0] == "SUSPENDED"
    async with services.session_factory() as session:
        epoch = await session.scalar(sa.select(orm.admins.c.auth_epoch).where(
            orm.admins.c.linked_user_id == holder["id"]))
    assert epoch == 1


async def test_a_refused_patch_changes_nothing_at_all(api: Api, services: Services) -> None:
    """The rename in the same PATCH is rolled back with the refused suspension."""
    scim = await scim_integration(api, Role.BILLING)
    plain = await scim.create_user()
    before = await scim.ok("GET", f"/Users/{plain['id']}")
    status, _ = await scim.call("PATCH", f"/Users/{plain['id']}", {"schemas": [PATCH_SCHEMA], "Operations": [
        {"op": "replace", "path": "name.givenName", "value": "Renamed"},
        {"op": "replace", "path": "password", "value": "short"}]})
    assert status == 400
    assert await scim.ok("GET", f"/Users/{plain['id']}") == before


async def test_delete_in_suspend_mode_hides_the_user_from_scim_only(api: Api, services: Services, org: Org) -> None:
    scim = await scim_integration(api, Role.ADMINISTRATOR, delete_mode="suspend")
    user = await scim.create_user()
    status, _ = await scim.call("DELETE", f"/Users/{user['id']}")
    assert status == 204
    status, gone = await scim.call("GET", f"/Users/{user['id']}")
    assert status == 404 and gone["status"] == "404"
    listed = await scim.ok("GET", f'/Users?filter=userName%20eq%20%22{user["userName"]}%22')
    assert listed["totalResults"] == 0
    kept = await api.ok("GET", f"/api/v1/users/{user['id']}")
    assert kept["state"] == "SUSPENDED"
    # Created again by the provider: the same identity comes back, active.
    again = await scim.create_user(user["userName"])
    assert again["id"] == user["id"] and again["active"] is True


async def test_delete_in_delete_mode_deletes_and_a_billing_delete_of_an_admin_role_user_sends_the_email(
        api: Api, services: Services, org: Org) -> None:
    administrator = await scim_integration(api, Role.ADMINISTRATOR, delete_mode="delete")
    billing = await scim_integration(api, Role.BILLING, delete_mode="delete")
    holder = await admin_role_user(api)
    status, _ = await administrator.call("DELETE", f"/Users/{holder['id']}")
    assert status == 403
    assert (await user_state(services, holder["id"]))[0] == "ACTIVATED"
    status, _ = await billing.call("DELETE", f"/Users/{holder['id']}")
    assert status == 204
    assert (await api.call("GET", f"/api/v1/users/{holder['id']}"))[0] == 404
    outbox = (await api.ok("GET", "/api/v1/mail/outbox"))["results"]
    assert any(m["to"] == holder["email"] for m in outbox)
    types = {r["event_type"] for r in scim_records(await records(services, org.id), billing, holder["id"],
                                                    "user_delete")}
    assert types == {"user_delete"}


async def test_an_email_change_of_a_linked_user_moves_the_admin_email(api: Api, services: Services) -> None:
    scim = await scim_integration(api, Role.BILLING)
    holder = await admin_role_user(api)
    await scim.ok("PATCH", f"/Users/{holder['id']}", {"schemas": [PATCH_SCHEMA], "Operations": [
        {"op": "replace", "path": 'emails[type eq "work"].value', "value": "moved@example.com"}]})
    admins = await api.ok("GET", "/api/v1/admins")
    assert any(a["linked_user_id"] == holder["id"] and a["email"] == "moved@example.com"
               for a in admins["results"])


async def test_a_read_only_integration_reads_but_does_not_write(api: Api) -> None:
    scim = await scim_integration(api, Role.READ_ONLY)
    user = await api.user()
    assert (await scim.ok("GET", f"/Users/{user['id']}"))["id"] == user["id"]
    status, refused = await scim.call("POST", "/Users", {"schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
                                                         "userName": "nope", "emails": [{"value": "n@example.com"}]})
    assert status == 403 and refused["status"] == "403"
    status, _ = await scim.call("POST", "/Groups", {"displayName": "nope"})
    assert status == 403
