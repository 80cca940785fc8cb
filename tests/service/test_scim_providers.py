"""Okta and Microsoft Entra ID request shapes (from their public SCIM documentation), replayed end
to end against adminlink's SCIM service."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from service.adapters import orm
from service.bootstrap import Services
from tests.conftest import Api
from tests.service.test_scim_support import ENTERPRISE, GROUP_SCHEMA, PATCH_SCHEMA, USER_SCHEMA, scim_integration


async def user_row(services: Services, user_id: str) -> sa.Row:
    async with services.session_factory() as session:
        return (await session.execute(sa.select(orm.users).where(orm.users.c.id == user_id))).one()


# --- Okta --------------------------------------------------------------------------------------


async def test_okta_lookup_create_update_deactivate(api: Api, services: Services) -> None:
    scim = await scim_integration(api, provider="okta")
    status, found = await scim.call(
        "GET", '/Users?filter=userName%20eq%20%22test.user@okta.local%22&startIndex=1&count=100')
    assert status == 200
    assert found["totalResults"] == 0 and found["startIndex"] == 1 and found["itemsPerPage"] == 0
    assert all(isinstance(found[k], int) for k in ("totalResults", "startIndex", "itemsPerPage"))

    create = {
        "schemas": [USER_SCHEMA], "userName": "test.user@okta.local",
        "name": {"givenName": "Test", "familyName": "User"},
        "emails": [{"primary": True, "value": "test.user@okta.local", "type": "work"}],
        "displayName": "Test User", "locale": "en-US", "externalId": "00ujl29u0le5T6Aj10h7",
        "groups": [], "password": "1mz050nq", "active": True,
    }
    status, created = await scim.call("POST", "/Users", create)
    assert status == 201, created
    assert created["externalId"] == "00ujl29u0le5T6Aj10h7" and created["displayName"] == "Test User"
    assert "password" not in created
    # The generated placeholder is below the password policy: the user has no password to sign in with.
    assert (await user_row(services, created["id"])).password_hash is None

    status, duplicate = await scim.call("POST", "/Users", create)
    assert status == 409 and duplicate["scimType"] == "uniqueness"

    status, found = await scim.call(
        "GET", '/Users?filter=userName%20eq%20%22TEST.USER@okta.local%22&startIndex=1&count=100')
    assert found["totalResults"] == 1 and found["Resources"][0]["id"] == created["id"]

    current = await scim.ok("GET", f"/Users/{created['id']}")
    current["name"] = {"givenName": "Another", "familyName": "User"}
    current["displayName"] = "Another User"
    replaced = await scim.ok("PUT", f"/Users/{created['id']}", current)
    assert replaced["name"] == {"givenName": "Another", "familyName": "User"}
    assert (await user_row(services, created["id"])).firstname == "Another"

    deactivate = {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "replace", "value": {"active": False}}]}
    patched = await scim.ok("PATCH", f"/Users/{created['id']}", deactivate)
    assert patched["active"] is False
    assert (await user_row(services, created["id"])).state.value == "SUSPENDED"


async def test_okta_put_with_a_real_password_sets_it(api: Api, services: Services) -> None:
    scim = await scim_integration(api, provider="okta")
    created = await scim.create_user()
    created["password"] = "a strong synced password 1"
    await scim.ok("PUT", f"/Users/{created['id']}", created)
    assert (await user_row(services, created["id"])).password_hash is not None


async def test_okta_group_push(api: Api) -> None:
    scim = await scim_integration(api, provider="okta")
    user = await scim.create_user()
    status, group = await scim.call("POST", "/Groups", {"schemas": [GROUP_SCHEMA], "displayName": "Test Group",
                                                        "members": []})
    assert status == 201 and "members" not in group
    await scim.ok("PATCH", f"/Groups/{group['id']}", {"schemas": [PATCH_SCHEMA], "Operations": [
        {"op": "add", "path": "members", "value": [{"value": user["id"], "display": user["userName"]}]}]})
    renamed = await scim.ok("PATCH", f"/Groups/{group['id']}", {"schemas": [PATCH_SCHEMA], "Operations": [
        {"op": "replace", "value": {"id": group["id"], "displayName": "Renamed Group"}}]})
    assert renamed["displayName"] == "Renamed Group" and renamed["members"][0]["value"] == user["id"]
    read = await scim.ok("GET", f"/Users/{user['id']}")
    assert read["groups"][0]["value"] == group["id"] and read["groups"][0]["display"] == "Renamed Group"


# --- Microsoft Entra ID ------------------------------------------------------------------------


async def test_entra_test_connection_gets_an_empty_list(api: Api) -> None:
    scim = await scim_integration(api, provider="entra")
    status, body = await scim.call("GET", f'/Users?filter=userName%20eq%20%22{uuid.uuid4()}%22')
    assert status == 200
    assert body["totalResults"] == 0 and body["Resources"] == []


def entra_user(upn: str) -> dict:
    return {
        "schemas": [USER_SCHEMA, ENTERPRISE],
        "externalId": "0a21f0f2-8d2a-4f8e-bf98-7363c4aed4ef", "userName": upn, "active": True,
        "displayName": "Test User", "title": "Engineer", "preferredLanguage": "en-US",
        "emails": [{"primary": True, "type": "work", "value": upn}],
        "name": {"formatted": "Test User", "familyName": "User", "givenName": "Test"},
        "addresses": [{"type": "work", "streetAddress": "1 Main St", "locality": "Redmond", "country": "US"}],
        "phoneNumbers": [{"type": "work", "value": "+1 555 0100"}],
        ENTERPRISE: {"employeeNumber": "701984", "department": "Engineering"},
        "meta": {"resourceType": "User"},
    }


async def test_entra_provisioning_cycle(api: Api, services: Services) -> None:
    scim = await scim_integration(api, provider="entra")
    manager = await scim.create_user()
    status, user = await scim.call("POST", "/Users", entra_user("Test_User@contoso.com"))
    assert status == 201, user
    assert user[ENTERPRISE] == {"employeeNumber": "701984", "department": "Engineering"}
    assert user["addresses"][0]["locality"] == "Redmond" and user["title"] == "Engineer"

    changes = {"schemas": [PATCH_SCHEMA], "Operations": [
        {"op": "Replace", "path": 'emails[type eq "work"].value', "value": "updated@contoso.com"},
        {"op": "Replace", "value": {"name.givenName": "Updated", "name.familyName": "Person"}},
        {"op": "Add", "path": f"{ENTERPRISE}:manager", "value": manager["id"]},
        {"op": "Replace", "path": "title", "value": "Principal Engineer"},
    ]}
    patched = await scim.ok("PATCH", f"/Users/{user['id']}", changes)
    assert patched["emails"][0]["value"] == "updated@contoso.com"
    assert patched["name"]["givenName"] == "Updated" and patched["name"]["familyName"] == "Person"
    assert patched[ENTERPRISE]["manager"]["value"] == manager["id"]
    row = await user_row(services, user["id"])
    assert (row.email, row.firstname, row.lastname) == ("updated@contoso.com", "Updated", "Person")

    disable = {"schemas": [PATCH_SCHEMA], "Operations": [
        {"op": "Replace", "path": "active", "value": "False"}]}
    assert (await scim.ok("PATCH", f"/Users/{user['id']}", disable))["active"] is False
    # Entra ID reads deactivated users back: still there, inactive.
    assert (await scim.ok("GET", f"/Users/{user['id']}"))["active"] is False
    listed = await scim.ok("GET", f'/Users?filter=externalId%20eq%20%22{user["externalId"]}%22')
    assert listed["totalResults"] == 1 and listed["Resources"][0]["active"] is False

    enable = {"schemas": [PATCH_SCHEMA], "Operations": [{"op": "Replace", "value": {"active": "True"}}]}
    assert (await scim.ok("PATCH", f"/Users/{user['id']}", enable))["active"] is True


async def test_entra_user_without_mail_takes_the_user_principal_name_as_its_email(api: Api,
                                                                                 services: Services) -> None:
    """Entra ID maps userPrincipalName to userName and sends no ``emails`` for a person without a
    ``mail`` attribute: the email-shaped userName is the user's email, as spelled."""
    scim = await scim_integration(api, provider="entra")
    upn = f"No_Mail_{uuid.uuid4().hex[:8]}@Contoso.com"
    body = {k: v for k, v in entra_user(upn).items() if k != "emails"}
    status, user = await scim.call("POST", "/Users", body)
    assert status == 201, user
    email = upn.replace("Contoso.com", "contoso.com")  # the domain normalised, as in an emails value
    assert user["emails"] == [{"value": email, "type": "work", "primary": True}]
    row = await user_row(services, user["id"])
    assert (row.email, row.username) == (email, upn)
    # The email is now the user's primary emails entry: a PATCH of userName alone keeps it.
    moved = f"Moved_{uuid.uuid4().hex[:8]}@Contoso.com"
    await scim.ok("PATCH", f"/Users/{user['id']}", {"schemas": [PATCH_SCHEMA], "Operations": [
        {"op": "Replace", "path": "userName", "value": moved}]})
    assert ((row := await user_row(services, user["id"])).username, row.email) == (moved, email)
    # A full replacement without emails takes the userName again; one with emails takes those.
    renamed = f"Renamed_{uuid.uuid4().hex[:8]}@Contoso.com"
    replaced = await scim.ok("PUT", f"/Users/{user['id']}", {**body, "userName": renamed})
    assert replaced["emails"][0]["value"] == renamed.replace("Contoso.com", "contoso.com")
    assert (await user_row(services, user["id"])).email == replaced["emails"][0]["value"]
    mailed = await scim.ok("PUT", f"/Users/{user['id']}", {**body, "userName": renamed,
                                                            "emails": [{"value": "mail@contoso.com", "primary": True}]})
    assert mailed["emails"][0]["value"] == "mail@contoso.com"


async def test_a_user_with_neither_emails_nor_an_email_shaped_user_name_is_refused(api: Api,
                                                                                   services: Services) -> None:
    scim = await scim_integration(api, provider="entra")
    name = f"no-mail-{uuid.uuid4().hex[:8]}"
    for user_name in (name, f"{name}@", f"{name} @contoso.com"):
        body = {k: v for k, v in entra_user(user_name).items() if k != "emails"}
        status, error = await scim.call("POST", "/Users", body)
        assert (status, error["scimType"]) == (400, "invalidValue"), user_name
        assert error["detail"].startswith("emails: adminlink needs an email for every user")
    listed = await scim.ok("GET", f'/Users?filter=userName%20sw%20%22{name}%22')
    assert listed["totalResults"] == 0


async def test_entra_manager_as_a_bare_string_in_a_no_path_replace(api: Api) -> None:
    scim = await scim_integration(api, provider="entra")
    manager, user = await scim.create_user(), await scim.create_user()
    patched = await scim.ok("PATCH", f"/Users/{user['id']}", {"schemas": [PATCH_SCHEMA], "Operations": [
        {"op": "Replace", "value": {f"{ENTERPRISE}:manager": manager["id"]}}]})
    assert patched[ENTERPRISE]["manager"] == {"value": manager["id"]}
    removed = await scim.ok("PATCH", f"/Users/{user['id']}", {"schemas": [PATCH_SCHEMA], "Operations": [
        {"op": "Remove", "path": f"{ENTERPRISE}:manager"}]})
    assert "manager" not in removed.get(ENTERPRISE, {})


async def test_entra_group_members_added_and_removed_with_a_value(api: Api) -> None:
    scim = await scim_integration(api, provider="entra")
    first, second = await scim.create_user(), await scim.create_user()
    group = await scim.ok("POST", "/Groups", {"schemas": [GROUP_SCHEMA], "externalId": "8aa1a0c0-c4c3-4bc0",
                                              "displayName": "Group1DisplayName"})
    found = await scim.ok("GET", '/Groups?excludedAttributes=members&filter=displayName%20eq%20%22Group1DisplayName%22')
    assert found["totalResults"] == 1 and "members" not in found["Resources"][0]
    await scim.ok("PATCH", f"/Groups/{group['id']}", {"schemas": [PATCH_SCHEMA], "Operations": [
        {"op": "Add", "path": "members", "value": [{"value": first["id"]}, {"value": second["id"]}]}]})
    after = await scim.ok("PATCH", f"/Groups/{group['id']}", {"schemas": [PATCH_SCHEMA], "Operations": [
        {"op": "Remove", "path": "members", "value": [{"value": first["id"]}]}]})
    assert [m["value"] for m in after["members"]] == [second["id"]]
    by_member = await scim.ok("GET", f'/Groups?filter=members%5Bvalue%20eq%20%22{second["id"]}%22%5D')
    assert [g["id"] for g in by_member["Resources"]] == [group["id"]]
