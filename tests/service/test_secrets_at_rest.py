"""Secrets at rest: every secret the API issues or is given, asked for with an ``Idempotency-Key``
(whose stored answer a retry replays), is found nowhere in the database in plaintext; stored
answers expire after 24 hours and a cleanup job deletes them."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from service import config
from service.adapters import orm
from service.adapters.crypto import SecretBox
from service.adapters.orm import IDEMPOTENCY_KEY_LIFETIME as LIFETIME
from service.bootstrap import Services
from service.domain.model import new_id, now
from tests.conftest import Api, Org, enroll_totp_as_the_user
from tests.fakes.duo_server import FakeDuo
from tests.fakes.portal import signin_settings
from tests.service.test_signin_duo import REDIRECT_URI
from workers.maintenance import purge_expired_idempotency_keys
from workers.settings import worker_options

# The local Duo server signs with 40-character secrets like Duo itself (PyJWT finds them short).
pytestmark = pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")

# The Duo settings' client secret is one of the secrets handed in.
@pytest.fixture
def settings(database_url: str, tmp_path: Path, duo: FakeDuo) -> config.Settings:
    return signin_settings(database_url, tmp_path, duo_ca_bundle=str(duo.ca_path), duo_redirect_uri=REDIRECT_URI,
                           duo_api_hosts="api-*.duosecurity.com, 127.0.0.1:*")


class Issuer:
    """Sends each request twice with one Idempotency-Key (the second is a replay, answered
    with the first answer) and keeps the secrets they carry."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.secrets: dict[str, str] = {}

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        key = f"IK-{new_id()}"
        headers = {"x-api-key": self.api.key, "Idempotency-Key": key}
        first = await self.api.client.request(method, path, json=body, headers=headers)
        answer = await first.json()
        assert first.status < 300, (method, path, answer)
        again = await self.api.client.request(method, path, json=body, headers=headers)
        assert (again.status, await again.json()) == (first.status, answer)
        assert again.headers["Idempotent-Replayed"] == "true"
        return answer

    def keep(self, name: str, secret: str) -> None:
        assert secret, name
        self.secrets[name] = secret


def text_of(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("latin-1")
    if isinstance(value, dict | list):
        return json.dumps(value)
    return str(value)


async def plaintext_found(services: Services, secrets: dict[str, str]) -> list[tuple[str, str, str]]:
    """(secret's name, table, column) wherever a secret is stored as it is, in any text, JSON or
    binary column of any table the ORM knows."""
    found = []
    async with services.session_factory() as session:
        for table in orm.metadata.sorted_tables:
            for column in table.columns:
                if not isinstance(column.type, sa.String | sa.JSON | sa.LargeBinary):
                    continue
                values = await session.scalars(sa.select(column).where(column.is_not(None)))
                stored = "\n".join(text_of(v) for v in values)
                found += [(name, table.name, column.name) for name, secret in secrets.items() if secret in stored]
    return found


async def issue_every_kind_of_secret(api: Api, services: Services, org: Org, duo: FakeDuo) -> dict[str, str]:
    issuer = Issuer(api)
    issuer.keep("bootstrap api key", org.key)
    issuer.keep("bootstrap password", org.password)
    issuer.keep("bootstrap totp secret", org.totp_secret)

    admin_password = f"admin password {new_id()}"
    admin = await issuer.call("POST", "/api/v1/admins", {"email": f"classic-{new_id()[:8]}@acme.test",
                                                         "role": "Manager", "password": admin_password,
                                                         "api_access": True})
    issuer.keep("classic admin password", admin_password)
    issuer.keep("classic admin totp secret", admin["totp_secret"])
    issuer.keep("api key", (await issuer.call("POST", f"/api/v1/admins/{admin['id']}/api-keys"))["key"])

    user_password, new_password = f"user password {new_id()}", f"new user password {new_id()}"
    user = await issuer.call("POST", "/api/v1/users", {"email": f"u-{new_id()[:8]}@acme.test",
                                                       "username": f"u-{new_id()[:8]}", "password": user_password})
    issuer.keep("user password", user_password)
    # An administrator only requires TOTP; the user enrolls it (user portal) and alone sees the secret.
    assert "secret" not in await issuer.call("POST", f"/api/v1/users/{user['id']}/mfa/totp")
    issuer.keep("user totp secret", await enroll_totp_as_the_user(services, user["id"]))
    await issuer.call("PUT", f"/api/v1/users/{user['id']}/password", {"password": new_password})
    issuer.keep("user password set by an admin", new_password)

    for kind, provider, shown in (("scim", "okta", "token"), ("hr", "generic", "secret"),
                                  ("directory", "generic", "secret")):
        made = await issuer.call("POST", "/api/v1/integrations", {"kind": kind, "provider": provider,
                                                                  "name": f"{kind} {new_id()}", "role": "Manager"})
        issuer.keep(f"{kind} {shown}", made[shown])
        rotated = await issuer.call("POST", f"/api/v1/integrations/{made['id']}/rotate", {})
        issuer.keep(f"rotated {kind} {shown}", rotated[shown])
    bamboo_key, bamboo_rotated = "bamboo-" + new_id(), "bamboo-rotated-" + new_id()
    made = await issuer.call("POST", "/api/v1/integrations", {"kind": "hr", "provider": "bamboohr", "name": new_id(),
                                                              "role": "Manager", "secret": bamboo_key})
    await issuer.call("POST", f"/api/v1/integrations/{made['id']}/rotate", {"secret": bamboo_rotated})
    issuer.keep("BambooHR's own key", bamboo_key)
    issuer.keep("BambooHR's rotated key", bamboo_rotated)

    client_id, duo_secret = duo.new_application()
    await issuer.call("PUT", "/api/v1/mfa/duo", {"client_id": client_id, "client_secret": duo_secret,
                                                 "api_host": duo.host})
    issuer.keep("Duo client secret", duo_secret)
    return issuer.secrets


async def test_no_secret_is_stored_in_plaintext(api: Api, services: Services, org: Org, duo: FakeDuo) -> None:
    secrets = await issue_every_kind_of_secret(api, services, org, duo)
    assert len(secrets) == 18
    assert await plaintext_found(services, secrets) == []


async def stored_answer(services: Services, org_id: str, key: str) -> Any:
    table = orm.idempotency_keys
    async with services.session_factory() as session:
        return await session.scalar(sa.select(table.c.response).where(table.c.organization_id == org_id,
                                                                      table.c.key == key))


async def age_key(services: Services, org_id: str, key: str, age: timedelta) -> None:
    table = orm.idempotency_keys
    async with services.session_factory() as session, session.begin():
        await session.execute(sa.update(table).where(table.c.organization_id == org_id, table.c.key == key)
                              .values(created_at=now() - age))


async def test_a_key_older_than_24_hours_is_a_new_key(api: Api, services: Services, org: Org) -> None:
    path = f"/api/v1/admins/{org.admin_id}/api-keys"
    first = await api.post(path, None, **{"Idempotency-Key": "IK-old"})
    await age_key(services, org.id, "IK-old", LIFETIME - timedelta(minutes=1))
    assert await api.post(path, None, **{"Idempotency-Key": "IK-old"}) == first  # still replayed
    await age_key(services, org.id, "IK-old", LIFETIME + timedelta(minutes=1))
    response = await api.client.post(path, headers={"x-api-key": api.key, "Idempotency-Key": "IK-old"})
    again = await response.json()
    assert response.status == 201 and "Idempotent-Replayed" not in response.headers
    assert again["key"] != first[1]["key"]  # applied anew: a second key
    # The new answer is kept for the next 24 hours, for the same request only.
    assert await api.post(path, None, **{"Idempotency-Key": "IK-old"}) == (201, again)
    status, error = await api.post("/api/v1/users", {"email": "x@acme.test", "username": "x"},
                                   **{"Idempotency-Key": "IK-old"})
    assert (status, error["error"]["code"]) == (422, "idempotency_key_reused")


async def test_an_answer_kept_before_sealing_is_still_replayed(api: Api, services: Services, org: Org) -> None:
    path = "/api/v1/users"
    body = {"email": "legacy@acme.test", "username": "legacy"}
    first = await api.post(path, body, **{"Idempotency-Key": "IK-legacy"})
    table = orm.idempotency_keys
    async with services.session_factory() as session, session.begin():
        await session.execute(sa.update(table).where(table.c.organization_id == org.id, table.c.key == "IK-legacy")
                              .values(response=first[1]))
    assert await api.post(path, body, **{"Idempotency-Key": "IK-legacy"}) == first


async def test_cleanup_deletes_expired_keys_only(api: Api, services: Services, org: Org) -> None:
    for key in ("IK-expired", "IK-fresh"):
        await api.post("/api/v1/users", {"email": f"{key}@acme.test", "username": key}, **{"Idempotency-Key": key})
    await age_key(services, org.id, "IK-expired", LIFETIME + timedelta(seconds=1))
    assert await purge_expired_idempotency_keys(services) >= 1
    assert await stored_answer(services, org.id, "IK-expired") is None
    assert await stored_answer(services, org.id, "IK-fresh") is not None
    crons = {job.name for job in worker_options(services.settings)["cron_jobs"]}
    assert "cron:purge_idempotency_keys" in crons  # arq workers and `adminlink serve`'s own worker


async def test_an_answer_sealed_under_another_secret_key_is_refused_not_applied_again(
        api: Api, services: Services, org: Org) -> None:
    path = "/api/v1/users"
    body = {"email": "rekeyed@acme.test", "username": "rekeyed"}
    status, first = await api.post(path, body, **{"Idempotency-Key": "IK-rekeyed"})
    assert status == 201
    other_box = SecretBox(b"another secret key of at least 32 characters")
    table = orm.idempotency_keys
    async with services.session_factory() as session, session.begin():
        await session.execute(sa.update(table).where(table.c.organization_id == org.id, table.c.key == "IK-rekeyed")
                              .values(response=other_box.seal(json.dumps(first))))
    status, refused = await api.post(path, body, **{"Idempotency-Key": "IK-rekeyed"})
    assert (status, refused["error"]["code"]) == (409, "idempotency_answer_unreadable")
    status, users = await api.call("GET", "/api/v1/users?email=rekeyed@acme.test")
    assert (status, [u["id"] for u in users["results"]]) == (200, [first["id"]])
