"""The admin-role rules over the management API, each refusal checked to change nothing."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from service.adapters import orm
from service.adapters.crypto import token_hash
from service.adapters.sessions import PREFIX as SESSION_PREFIX
from service.adapters.sessions import Session
from service.bootstrap import Services
from service.domain.model import Role
from tests.conftest import Api, Org, bootstrap_org, enroll_totp_as_the_user


async def records(services: Services, org_id: str) -> list[dict[str, Any]]:
    table = orm.insights_events
    async with services.session_factory() as session:
        rows = await session.execute(
            sa.select(table.c.body).where(table.c.organization_id == org_id).order_by(table.c.timestamp)
        )
        return [r.body for r in rows]


async def snapshot(services: Services, org_id: str) -> tuple[Any, ...]:
    """Everything a refused request must leave as it was."""
    async with services.session_factory() as session:
        users = (await session.execute(sa.select(orm.users).where(orm.users.c.organization_id == org_id)
                                       .order_by(orm.users.c.id))).all()
        admins = (await session.execute(sa.select(orm.admins).where(orm.admins.c.organization_id == org_id)
                                        .order_by(orm.admins.c.id))).all()
        keys = (await session.execute(sa.select(orm.api_keys.c.id).where(
            orm.api_keys.c.organization_id == org_id).order_by(orm.api_keys.c.id))).all()
    return tuple(map(tuple, users)), tuple(map(tuple, admins)), tuple(keys)


async def set_columns(services: Services, table: sa.Table, row_id: str, **values: Any) -> None:
    async with services.session_factory() as session, session.begin():
        await session.execute(sa.update(table).where(table.c.id == row_id).values(**values))


async def test_create_admin_from_user_links_the_identity(api: Api, services: Services, org: Org) -> None:
    user = await api.user(firstname="Pat")
    admin = await api.admin_from_user(user, Role.MANAGER)
    assert admin["linked_user_id"] == user["id"]
    assert admin["mfa_enrollment"] == "inherited_from_user" and admin["role"] == "Manager"
    shown = await api.ok("GET", f"/api/v1/users/{user['id']}")
    assert shown["admin"] == {"id": admin["id"], "role": "Manager"}
    assert shown["mfa"] == {"configured": True, "required": False, "factors": ["totp"]}
    types = [(r["event_type"], r["resource"]["id"]) for r in await records(services, org.id)]
    assert types[-2:] == [("user_update", user["id"]), ("admin_create", admin["id"])]


async def test_only_billing_assigns_updates_or_removes_admin_roles(api: Api, services: Services,
                                                                   org: Org) -> None:
    user = await api.user()
    linked_user = await api.user()
    linked = await api.admin_from_user(linked_user, Role.HELP_DESK)
    administrator_admin, administrator = await api.admin_with_key(Role.ADMINISTRATOR)
    before = await snapshot(services, org.id)
    attempts = [
        ("/api/v1/admins/from-user", {"user_id": user["id"], "role": "Manager"}),
        (f"/api/v1/admins/{linked['id']}/remove-access", {"acknowledge": True}),
    ]
    for path, body in attempts:
        status, error = await administrator.post(path, body)
        assert status == 403, (path, error)
        assert error["error"]["code"] == "permission_denied"
        assert error["error"]["required_role"] == "Administrator with Billing"
    status, _ = await administrator.call("PATCH", f"/api/v1/admins/{linked['id']}", {"role": "Manager"})
    assert status == 403
    assert await snapshot(services, org.id) == before
    denied = [r for r in await records(services, org.id) if not r["success"]]
    assert [r["event_type"] for r in denied] == ["admin_create", "admin_delete", "admin_update"]
    assert {r["initiated_by"]["id"] for r in denied} == {administrator_admin["id"]}


async def test_user_must_be_active_unlocked_unexpired_and_enrolled(api: Api, services: Services,
                                                                   org: Org) -> None:
    suspended = await api.user()
    await api.ok("POST", f"/api/v1/users/{suspended['id']}/suspend")
    expired = await api.user()
    await api.ok("POST", f"/api/v1/users/{expired['id']}/expire-password")
    locked = await api.user()
    await set_columns(services, orm.users, locked["id"], account_locked=True)
    no_mfa = await api.user(mfa=False)
    before = await snapshot(services, org.id)
    for user, code in [(suspended, "user_not_active"), (expired, "user_password_expired"),
                       (locked, "user_locked"), (no_mfa, "user_mfa_not_enrolled")]:
        status, body = await api.post("/api/v1/admins/from-user", {"user_id": user["id"], "role": "Manager"})
        assert (status, body["error"]["code"]) == (409, code)
    assert await snapshot(services, org.id) == before


async def test_a_user_holds_at_most_one_admin_identity(api: Api, services: Services, org: Org) -> None:
    user = await api.user()
    await api.admin_from_user(user)
    before = await snapshot(services, org.id)
    status, body = await api.post("/api/v1/admins/from-user", {"email": user["email"].upper(), "role": "Manager"})
    assert (status, body["error"]["code"]) == (409, "user_already_admin")
    assert await snapshot(services, org.id) == before


async def test_link_existing_admin_needs_acknowledgement_and_matching_email(api: Api, services: Services,
                                                                           org: Org) -> None:
    admin, _ = await api.admin_with_key(Role.ADMINISTRATOR, "Pat.Lee@Acme.test")
    before = await snapshot(services, org.id)
    status, body = await api.post(f"/api/v1/admins/{admin['id']}/link-user", {"acknowledge": True})
    assert (status, body["error"]["code"]) == (404, "matching_user_not_found")
    user = await api.user("pat.lee@acme.test")
    listed = {a["id"]: a for a in (await api.ok("GET", "/api/v1/admins"))["results"]}
    assert listed[admin["id"]]["matching_user_id"] == user["id"]  # the seed's tooltip
    before = await snapshot(services, org.id)
    for body_sent in ({}, {"acknowledge": False}, {"acknowledge": "yes"}):
        status, body = await api.post(f"/api/v1/admins/{admin['id']}/link-user", body_sent)
        assert (status, body["error"]["code"]) == (400, "acknowledgement_required")
    assert await snapshot(services, org.id) == before
    linked = await api.ok("POST", f"/api/v1/admins/{admin['id']}/link-user", {"acknowledge": True})
    assert linked["linked_user_id"] == user["id"] and linked["mfa_enrollment"] == "linked_user"
    async with services.session_factory() as session:
        row = (await session.execute(sa.select(orm.admins).where(orm.admins.c.id == admin["id"]))).one()
    assert row.password_hash is None and row.totp_secret is None
    pairs = [r["event_type"] for r in await records(services, org.id) if r["success"]][-2:]
    assert pairs == ["user_update", "admin_update"]


async def test_a_linked_admins_email_is_its_users_spelling_from_the_moment_of_the_link(
        api: Api, services: Services, org: Org) -> None:
    admin, _ = await api.admin_with_key(Role.MANAGER, "sam@acme.example")
    user = await api.user("Sam@Acme.Example")
    linked = await api.ok("POST", f"/api/v1/admins/{admin['id']}/link-user", {"acknowledge": True})
    assert linked["email"] == "Sam@Acme.Example"
    assert (await api.ok("GET", f"/api/v1/admins/{admin['id']}"))["email"] == user["email"]
    [linking] = [r for r in await records(services, org.id) if r["event_type"] == "admin_update"
                 and any(c["field"] == "linked_user_id" for c in r["changes"])]
    assert {"field": "email", "from": "sam@acme.example", "to": "Sam@Acme.Example"} in linking["changes"]
    assert linking["resource"]["email"] == "Sam@Acme.Example"


async def test_federated_admins_cannot_be_linked(api: Api, services: Services, org: Org) -> None:
    admin, _ = await api.admin_with_key(Role.MANAGER, "fed@acme.test")
    await api.user("fed@acme.test")
    await set_columns(services, orm.admins, admin["id"], federated=True)
    before = await snapshot(services, org.id)
    status, body = await api.post(f"/api/v1/admins/{admin['id']}/link-user", {"acknowledge": True})
    assert (status, body["error"]["code"]) == (409, "admin_federated")
    assert await snapshot(services, org.id) == before


async def test_linked_admin_email_follows_the_user(api: Api, services: Services, org: Org) -> None:
    user = await api.user("before@acme.test")
    admin = await api.admin_from_user(user)
    await api.ok("PATCH", f"/api/v1/users/{user['id']}", {"email": "After@acme.test"})
    assert (await api.ok("GET", f"/api/v1/admins/{admin['id']}"))["email"] == "After@acme.test"
    before = await snapshot(services, org.id)
    status, body = await api.call("PATCH", f"/api/v1/admins/{admin['id']}", {"email": "other@acme.test"})
    assert (status, body["error"]["code"]) == (409, "admin_email_follows_user")
    assert await snapshot(services, org.id) == before


async def test_remove_access_preserves_the_user_and_deletes_keys(api: Api, services: Services,
                                                                 org: Org) -> None:
    user = await api.user()
    admin = await api.admin_from_user(user, Role.ADMINISTRATOR)
    key = (await api.ok("POST", f"/api/v1/admins/{admin['id']}/api-keys"))["key"]
    before = await snapshot(services, org.id)
    status, body = await api.post(f"/api/v1/admins/{admin['id']}/remove-access", {})
    assert (status, body["error"]["code"]) == (400, "acknowledgement_required")
    assert await snapshot(services, org.id) == before
    status, _ = await api.post(f"/api/v1/admins/{admin['id']}/remove-access", {"acknowledge": True})
    assert status == 204
    shown = await api.ok("GET", f"/api/v1/users/{user['id']}")
    assert shown["admin"] is None and shown["state"] == "ACTIVATED"
    status, _ = await Api(api.client, key).get("/api/v1/users")
    assert status == 401  # integrations using the admin's API key break, as the seed warns


async def test_last_billing_admin_is_never_removed(api: Api, services: Services, org: Org) -> None:
    user = await api.user()
    successor = await api.admin_from_user(user, Role.BILLING)
    boss = Api(api.client, await api_as_new_key(services, api, successor["id"]))
    # The bootstrap admin can go: the linked Billing admin remains.
    status, _ = await boss.post(f"/api/v1/admins/{org.admin_id}/remove-access", {"acknowledge": True})
    assert status == 204
    # Only the successor is left: every way of taking it away is refused.
    spare, _ = await boss.admin_with_key(Role.MANAGER)
    before = await snapshot(services, org.id)
    attempts = [
        ("POST", f"/api/v1/admins/{successor['id']}/remove-access", {"acknowledge": True}),
        ("PATCH", f"/api/v1/admins/{successor['id']}", {"role": "Administrator"}),
        ("POST", f"/api/v1/users/{user['id']}/suspend", None),
        ("DELETE", f"/api/v1/users/{user['id']}", None),
        ("POST", "/api/v1/users/bulk-delete", {"ids": [user["id"]], "confirm_count": 1}),
    ]
    for method, path, body in attempts:
        status, error = await boss.call(method, path, body)
        assert (status, error["error"]["code"]) == (409, "last_billing_admin"), (method, path)
    assert await snapshot(services, org.id) == before
    refused = [r for r in await records(services, org.id) if not r["success"]]
    assert len(refused) == len(attempts)
    async with services.session_factory() as session:
        notices = (await session.execute(sa.select(orm.mail_outbox.c.recipient, orm.mail_outbox.c.subject).where(
            orm.mail_outbox.c.organization_id == org.id,
            orm.mail_outbox.c.subject.like("%last Administrator with Billing%")))).all()
    assert len(notices) == len(attempts)  # one to each other admin per refusal
    assert {n.recipient for n in notices} == {spare["email"]}


async def test_last_billing_admin_with_api_access_keeps_it(api: Api, services: Services, org: Org) -> None:
    # Another Billing admin can sign in, but without API access it cannot run the management API.
    user = await api.user()
    portal_only = await api.ok("POST", "/api/v1/admins/from-user",
                               {"user_id": user["id"], "role": Role.BILLING.value, "api_access": False})
    before = await snapshot(services, org.id)
    status, error = await api.call("PATCH", f"/api/v1/admins/{org.admin_id}", {"api_access": False})
    assert (status, error["error"]["code"]) == (409, "last_billing_admin")
    assert await snapshot(services, org.id) == before
    assert (await api.get("/api/v1/users"))[0] == 200  # the key still works
    refused = [r for r in await records(services, org.id) if not r["success"]]
    assert [(r["event_type"], r["resource"]["id"]) for r in refused] == [("admin_update", org.admin_id)]
    async with services.session_factory() as session:
        notices = (await session.execute(sa.select(orm.mail_outbox.c.recipient, orm.mail_outbox.c.body).where(
            orm.mail_outbox.c.organization_id == org.id,
            orm.mail_outbox.c.subject.like("%last Administrator with Billing%")))).all()
    assert [n.recipient for n in notices] == [portal_only["email"]]
    assert "turn off API access of" in notices[0].body and "has API access" in notices[0].body
    # Once another Billing admin has API access, the first may give its own up.
    await api.ok("PATCH", f"/api/v1/admins/{portal_only['id']}", {"api_access": True})
    turned_off = await api.ok("PATCH", f"/api/v1/admins/{org.admin_id}", {"api_access": False})
    assert turned_off["api_access"] is False


async def api_as_new_key(services: Services, api: Api, admin_id: str) -> str:
    return str((await api.ok("POST", f"/api/v1/admins/{admin_id}/api-keys"))["key"])


async def test_admin_cannot_set_or_reset_own_user_password(api: Api, services: Services, org: Org) -> None:
    user = await api.user()
    admin = await api.admin_from_user(user, Role.BILLING)
    own = Api(api.client, await api_as_new_key(services, api, admin["id"]))
    before = await snapshot(services, org.id)
    status, body = await own.call("PUT", f"/api/v1/users/{user['id']}/password",
                                  {"password": "a brand new password"})
    assert (status, body["error"]["code"]) == (403, "use_user_portal")
    status, body = await own.post(f"/api/v1/users/{user['id']}/expire-password")
    assert (status, body["error"]["code"]) == (403, "use_user_portal")
    assert await snapshot(services, org.id) == before


async def test_other_organizations_ids_answer_404(api: Api, services: Services, client: Any) -> None:
    other = await bootstrap_org(services, "Other")
    theirs = await Api(client, other.key).user()
    for method, path in [("GET", f"/api/v1/users/{theirs['id']}"), ("POST", f"/api/v1/users/{theirs['id']}/suspend"),
                         ("GET", f"/api/v1/admins/{other.admin_id}"),
                         ("POST", f"/api/v1/admins/{other.admin_id}/remove-access")]:
        status, _ = await api.call(method, path, {"acknowledge": True} if method == "POST" else None)
        assert status == 404, (method, path)
    assert (await Api(client, other.key).ok("GET", f"/api/v1/users/{theirs['id']}"))["state"] == "ACTIVATED"


async def test_bulk_delete_needs_the_exact_count(api: Api, services: Services, org: Org) -> None:
    users = [await api.user() for _ in range(3)]
    ids = [u["id"] for u in users]
    before = await snapshot(services, org.id)
    for count in (2, 4, 0):
        status, body = await api.post("/api/v1/users/bulk-delete", {"ids": ids, "confirm_count": count})
        assert (status, body["error"]["code"]) == (400, "confirm_count_mismatch")
    assert await snapshot(services, org.id) == before
    assert (await api.ok("POST", "/api/v1/users/bulk-delete", {"ids": ids, "confirm_count": 3})) == {"deleted": 3}
    for user_id in ids:
        assert (await api.get(f"/api/v1/users/{user_id}"))[0] == 404


async def test_policy_check_answers_the_needed_role(api: Api, services: Services, org: Org) -> None:
    plain, holder = await api.user(), await api.user()
    await api.admin_from_user(holder, Role.READ_ONLY)
    _, help_desk = await api.admin_with_key(Role.HELP_DESK)
    on_plain = await help_desk.ok("POST", "/api/v1/policy/check", {"action": "suspend_user", "user_id": plain["id"]})
    on_holder = await help_desk.ok("POST", "/api/v1/policy/check",
                                   {"action": "suspend_user", "user_id": holder["id"]})
    assert (on_plain["allowed"], on_holder["allowed"]) == (True, False)
    assert on_holder["required_role"] == "Administrator with Billing" and on_holder["target_has_admin_role"]
    status, body = await help_desk.post("/api/v1/policy/check", {"action": "fly", "user_id": plain["id"]})
    assert (status, body["error"]["code"]) == (400, "invalid_field")


async def test_sessions_end_when_the_change_commits(api: Api, services: Services, org: Org) -> None:
    user = await api.user()
    admin = await api.admin_from_user(user, Role.MANAGER)

    async def open_session(kind: str, identity_id: str) -> str:
        return await services.sessions.open(Session(kind, identity_id, org.id, 0, "admin_portal", "totp", "now"))

    admin_token = await open_session("admin", admin["id"])
    user_token = await open_session("user", user["id"])

    async def session_status(token: str) -> int:
        response = await api.client.get("/auth/session", headers={"Authorization": f"Bearer {token}"})
        return response.status

    other_token = await open_session("user", (await api.user())["id"])
    assert (await session_status(admin_token), await session_status(user_token)) == (200, 200)
    await api.ok("POST", f"/api/v1/users/{user['id']}/suspend")
    assert (await session_status(admin_token), await session_status(user_token)) == (401, 401)
    # Their keys are gone too, and only theirs.
    for kind, identity_id in (("admin", admin["id"]), ("user", user["id"])):
        assert not await services.redis.exists(f"{SESSION_PREFIX}index:{kind}:{identity_id}")
    assert not await services.redis.exists(SESSION_PREFIX + token_hash(user_token))
    assert await session_status(other_token) == 200


@pytest.mark.parametrize("redis", ["down", "stuck"])
async def test_sessions_end_at_commit_when_redis_fails_to_delete_their_keys(
        api: Api, services: Services, org: Org, monkeypatch: pytest.MonkeyPatch, redis: str) -> None:
    user = await api.user()
    token = await services.sessions.open(Session("user", user["id"], org.id, 0, "user_portal", "totp", "now"))

    async def failing(kind: str, identity_id: str) -> int:
        if redis == "stuck":
            await asyncio.sleep(3600)
        raise ConnectionError("Redis is down")

    monkeypatch.setattr(services.sessions, "end_all", failing)
    # A stuck Redis is given up on after a moment; the guard only keeps a regression from hanging.
    await asyncio.wait_for(api.ok("POST", f"/api/v1/users/{user['id']}/suspend"), timeout=30)
    assert (await api.ok("GET", f"/api/v1/users/{user['id']}"))["state"] == "SUSPENDED"
    monkeypatch.undo()
    response = await api.client.get("/auth/session", headers={"Authorization": f"Bearer {token}"})
    assert response.status == 401  # the key is still there, the session is not
    assert await services.redis.exists(SESSION_PREFIX + token_hash(token))


async def test_idempotency_key_replays_the_first_answer(api: Api, services: Services, org: Org) -> None:
    body = {"email": "once@acme.test", "username": "once", "password": "a long user password 1"}
    first = await api.post("/api/v1/users", body, **{"Idempotency-Key": "create-once"})
    second = await api.post("/api/v1/users", body, **{"Idempotency-Key": "create-once"})
    assert first[0] == second[0] == 201 and first[1] == second[1]
    listed = await api.ok("GET", "/api/v1/users?email=once@acme.test")
    assert listed["totalCount"] == 1
    status, error = await api.post("/api/v1/users", {**body, "username": "x"}, **{"Idempotency-Key": "create-once"})
    assert (status, error["error"]["code"]) == (422, "idempotency_key_reused")


async def test_bad_input_is_a_clear_4xx(api: Api) -> None:
    cases = [
        ("POST", "/api/v1/users", {"email": "not-an-email", "username": "x"}, 400, "invalid_email"),
        ("POST", "/api/v1/users", {"email": 5, "username": "x"}, 400, "invalid_field"),
        ("POST", "/api/v1/users", {"username": "x"}, 400, "missing_field"),
        ("POST", "/api/v1/users", {"email": "s@acme.test", "username": "s", "password": "short"}, 400,
         "password_too_short"),
        ("POST", "/api/v1/admins/from-user", {"role": "Emperor"}, 400, "invalid_field"),
        ("GET", "/api/v1/users?limit=abc", None, 400, "invalid_query"),
        ("PUT", "/api/v1/users/nope/password-authority", {"authority": "x"}, 400, "invalid_field"),
        ("POST", "/api/v1/users/nope/ssh-keys", {"public_key": "ssh-rsa nonsense"}, 404, "user_not_found"),
    ]
    for method, path, body, status, code in cases:
        got_status, got = await api.call(method, path, body)
        assert (got_status, got["error"]["code"]) == (status, code), (method, path, got)
    response = await api.client.post("/api/v1/users", data=b"{not json", headers={"x-api-key": api.key})
    assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_json"


async def test_an_administrator_requires_resets_or_removes_totp_and_never_sees_the_secret(
        api: Api, services: Services) -> None:
    user = await api.user(mfa=False)
    required = await api.ok("POST", f"/api/v1/users/{user['id']}/mfa/totp")
    assert "secret" not in required and "otpauth_uri" not in required
    assert required["mfa"] == {"configured": False, "required": True, "factors": []}  # counts only once confirmed
    secret = await enroll_totp_as_the_user(services, user["id"])  # the user, in the user portal
    async with services.session_factory() as session:
        stored = (await session.execute(sa.select(orm.totp_credentials.c.secret_encrypted).where(
            orm.totp_credentials.c.user_id == user["id"]))).scalar_one()
    assert secret not in stored
    status, body = await api.post(f"/api/v1/users/{user['id']}/mfa/totp")
    assert (status, body["error"]["code"]) == (409, "totp_already_enrolled")
    reset = await api.ok("POST", f"/api/v1/users/{user['id']}/mfa/totp/reset")
    assert reset["mfa"] == {"configured": False, "required": True, "factors": []}
    status, body = await api.post(f"/api/v1/users/{user['id']}/mfa/totp/reset")
    assert (status, body["error"]["code"]) == (404, "totp_not_enrolled")
    await enroll_totp_as_the_user(services, user["id"])
    await api.ok("DELETE", f"/api/v1/users/{user['id']}/mfa/required")
    status, _ = await api.call("DELETE", f"/api/v1/users/{user['id']}/mfa/totp")  # removed, not required again
    assert status == 204
    assert (await api.ok("GET", f"/api/v1/users/{user['id']}"))["mfa"] == {
        "configured": False, "required": False, "factors": []}


async def test_emails_can_be_made_to_match_from_either_side(api: Api, services: Services, org: Org) -> None:
    user = await api.user("user.side@acme.test")
    admin, _ = await api.admin_with_key(Role.MANAGER, "admin.side@acme.test")
    await api.ok("PATCH", f"/api/v1/admins/{admin['id']}", {"email": "User.Side@acme.test"})
    listed = {a["id"]: a for a in (await api.ok("GET", "/api/v1/admins"))["results"]}
    assert listed[admin["id"]]["matching_user_id"] == user["id"]
    other_user = await api.user("other.side@acme.test")
    other_admin, _ = await api.admin_with_key(Role.MANAGER, "admin.two@acme.test")
    await api.ok("PATCH", f"/api/v1/users/{other_user['id']}", {"email": "Admin.Two@acme.test"})
    linked = await api.ok("POST", f"/api/v1/admins/{other_admin['id']}/link-user", {"acknowledge": True})
    assert linked["linked_user_id"] == other_user["id"]
    # Still unique on each side.
    status, body = await api.call("PATCH", f"/api/v1/users/{other_user['id']}", {"email": "user.side@ACME.test"})
    assert (status, body["error"]["code"]) == (409, "email_taken")
    status, body = await api.call("PATCH", f"/api/v1/admins/{admin['id']}", {"email": org.email})
    assert (status, body["error"]["code"]) == (409, "email_taken")
