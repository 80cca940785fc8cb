"""Webhook signatures: the Standard Webhooks scheme and BambooHR's headers. Every refusal is a
400 or 401 with a stable code and records nothing."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from service.adapters import orm
from service.bootstrap import Services
from tests.conftest import Api, Org
from tests.service.test_webhook_support import (  # clean_jobs: an autouse fixture
    Sender,
    bamboo_headers,
    clean_jobs,  # noqa: F401
    event,
    integration,
    jobs_of,
    sender,
    standard_headers,
)


async def test_a_valid_signature_is_accepted_and_recorded(api: Api, services: Services, org: Org) -> None:
    user = await api.user()
    hr = await sender(api, "hr")
    status, body, _ = await hr.send(event("employee.suspended", email=user["email"]))
    assert status == 202
    assert body["status_url"] == f"/api/v1/jobs/{body['job_id']}"
    [row] = await jobs_of(services, org.id)
    assert (row.id, row.function, row.status) == (body["job_id"], "apply_webhook", "queued")


async def expect_refused(hr: Sender, services: Services, org: Org, body: bytes, headers: dict[str, str],
                         status: int, code: str) -> None:
    before = len(await jobs_of(services, org.id))
    got_status, got, _ = await hr.raw(body, headers)
    assert (got_status, got["error"]["code"]) == (status, code), got
    assert len(await jobs_of(services, org.id)) == before


async def test_wrong_secret_and_tampered_body_are_401(api: Api, services: Services, org: Org) -> None:
    user = await api.user()
    hr = await sender(api, "hr")
    other = await integration(api, "hr")
    body = json.dumps(event("employee.suspended", email=user["email"])).encode()
    await expect_refused(hr, services, org, body, standard_headers(other["secret"], body), 401, "invalid_signature")
    signed = standard_headers(hr.secret, body)
    tampered = body.replace(b"employee.suspended", b"employee.returned")
    await expect_refused(hr, services, org, tampered, signed, 401, "invalid_signature")
    swapped_id = {**signed, "webhook-id": "msg_another"}
    await expect_refused(hr, services, org, body, swapped_id, 401, "invalid_signature")


async def test_expired_and_future_timestamps_are_401(api: Api, services: Services, org: Org) -> None:
    user = await api.user()
    hr = await sender(api, "hr")
    body = json.dumps(event("employee.suspended", email=user["email"])).encode()
    for shift in (timedelta(minutes=-6), timedelta(minutes=6), timedelta(days=-3)):
        headers = standard_headers(hr.secret, body, at=datetime.now(UTC) + shift)
        await expect_refused(hr, services, org, body, headers, 401, "timestamp_out_of_tolerance")
    for beyond_9999 in ("253402300800", "999999999999"):  # too far off, not malformed
        headers = {**standard_headers(hr.secret, body), "webhook-timestamp": beyond_9999}
        await expect_refused(hr, services, org, body, headers, 401, "timestamp_out_of_tolerance")
    within = standard_headers(hr.secret, body, at=datetime.now(UTC) - timedelta(minutes=4))
    assert (await hr.raw(body, within))[0] == 202


async def test_a_bamboohr_key_rotated_in_keeps_the_old_secret_for_its_grace(api: Api, services: Services,
                                                                            org: Org) -> None:
    """The new key is not base64, so it cannot check a Standard Webhooks signature: the old
    secret still does, and another secret's signature is refused as such."""
    user = await api.user()
    hr = await sender(api, "hr", provider="bamboohr")
    await api.ok("POST", f"/api/v1/integrations/{hr.id}/rotate", {"secret": "my-bamboo-key-1234567890"})
    body = bamboo_body("5150", user["email"])
    assert (await hr.raw(body, standard_headers(hr.secret, body)))[0] == 202
    body = bamboo_body("5151", user["email"])
    stranger = "whsec_" + base64.b64encode(b"s" * 32).decode()
    await expect_refused(hr, services, org, body, standard_headers(stranger, body), 401, "invalid_signature")


async def test_missing_or_malformed_headers_are_400(api: Api, services: Services, org: Org) -> None:
    user = await api.user()
    hr = await sender(api, "hr")
    body = json.dumps(event("employee.suspended", email=user["email"])).encode()
    good = standard_headers(hr.secret, body)
    for name in ("webhook-id", "webhook-timestamp", "webhook-signature"):
        missing = {k: v for k, v in good.items() if k != name}
        await expect_refused(hr, services, org, body, missing, 400, "missing_signature_headers")
    await expect_refused(hr, services, org, body, {"content-type": "application/json"}, 400,
                         "missing_signature_headers")
    malformed = [
        {"webhook-timestamp": "yesterday"},
        {"webhook-timestamp": "1e10"},
        {"webhook-timestamp": "-5"},
        {"webhook-signature": "v1"},
        {"webhook-signature": "v1,not base64!"},
        {"webhook-signature": "v1,YWJj,extra"},
        {"webhook-signature": "v1,a"},  # base64 of a wrong length
        {"webhook-signature": good["webhook-signature"] + "  v1,YWJj"},
        {"webhook-id": "x" * 201},
    ]
    for change in malformed:
        await expect_refused(hr, services, org, body, {**good, **change}, 400, "malformed_signature_headers")


async def test_a_body_that_is_not_utf8_is_400(api: Api, services: Services, org: Org) -> None:
    hr = await sender(api, "hr")
    body = b'{"type": "employee.suspended", "x": "\xff\xfe"}'
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(int(datetime.now(UTC).timestamp())),
               "webhook-signature": "v1,AAAA"}
    await expect_refused(hr, services, org, body, headers, 400, "invalid_encoding")


async def test_a_correctly_signed_body_that_is_not_utf8_is_invalid_encoding(api: Api, services: Services,
                                                                            org: Org) -> None:
    """Signed by the sender's own secret, so only the encoding is wrong: invalid_encoding, as
    documented, not invalid_json."""
    body = b'{"type": "employee.suspended", "x": "\xff\xfe"}'
    hr = await sender(api, "hr")
    message_id, timestamp = "msg_not_utf8", str(int(datetime.now(UTC).timestamp()))
    key = base64.b64decode(hr.secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    headers = {"webhook-id": message_id, "webhook-timestamp": timestamp,
               "webhook-signature": "v1," + base64.b64encode(mac).decode(), "content-type": "application/json"}
    await expect_refused(hr, services, org, body, headers, 400, "invalid_encoding")
    bamboo = await sender(api, "hr", provider="bamboohr")
    await expect_refused(bamboo, services, org, body, bamboo_headers(bamboo.secret, body), 400, "invalid_encoding")


async def test_several_signatures_one_matching_is_accepted(api: Api, services: Services) -> None:
    user = await api.user()
    hr = await sender(api, "hr")
    other = await integration(api, "hr")
    body = json.dumps(event("employee.suspended", email=user["email"])).encode()
    mine = standard_headers(hr.secret, body, message_id="msg_rotating")
    theirs = standard_headers(other["secret"], body, message_id="msg_rotating", at=datetime.now(UTC))
    both = {**mine, "webhook-signature": f"v2,Zm9v {theirs['webhook-signature']} {mine['webhook-signature']}"}
    assert (await hr.raw(body, both))[0] == 202


async def test_a_rotated_secret_keeps_the_old_one_for_its_grace(api: Api, services: Services, org: Org) -> None:
    user = await api.user()
    hr = await sender(api, "hr")
    old = hr.secret
    rotated = await api.ok("POST", f"/api/v1/integrations/{hr.id}/rotate")
    assert rotated["secret"] != old
    assert (await hr.send(event("employee.suspended", email=user["email"]), secret=old))[0] == 202
    assert (await hr.send(event("employee.suspended", email=user["email"]), secret=rotated["secret"]))[0] == 202
    async with services.session_factory() as session, session.begin():
        await session.execute(sa.update(orm.integrations).where(orm.integrations.c.id == hr.id).values(
            previous_secret_expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    services.integrations_seen.drop(hr.id)  # the grace has run out: a day later no receiver holds it cached
    body = json.dumps(event("employee.suspended", email=user["email"])).encode()
    await expect_refused(hr, services, org, body, standard_headers(old, body), 401, "invalid_signature")
    assert (await hr.send(event("employee.suspended", email=user["email"]), secret=rotated["secret"]))[0] == 202


def bamboo_body(employee_id: str, email: str) -> bytes:
    return json.dumps({"employees": [{
        "id": employee_id, "timestamp": datetime.now(UTC).isoformat(), "changedFields": ["Status"],
        "fields": {"Status": "Inactive", "Work Email": email},
    }]}).encode()


async def test_bamboohr_signature_headers(api: Api, services: Services, org: Org) -> None:
    user = await api.user()
    bamboo = await sender(api, "hr", provider="bamboohr")
    body = bamboo_body("4021", user["email"])
    assert (await bamboo.raw(body, bamboo_headers(bamboo.secret, body)))[0] == 202
    other = await integration(api, "hr")
    await expect_refused(bamboo, services, org, body, bamboo_headers(other["secret"], body), 401,
                         "invalid_signature")
    await expect_refused(bamboo, services, org, body + b" ", bamboo_headers(bamboo.secret, body), 401,
                         "invalid_signature")
    old = bamboo_headers(bamboo.secret, body, at=datetime.now(UTC) - timedelta(minutes=10))
    await expect_refused(bamboo, services, org, body, old, 401, "timestamp_out_of_tolerance")
    bad_hex = {**bamboo_headers(bamboo.secret, body), "X-BambooHR-Signature": "zz" * 32}
    await expect_refused(bamboo, services, org, body, bad_hex, 400, "malformed_signature_headers")
    bad_time = {**bamboo_headers(bamboo.secret, body), "X-BambooHR-Timestamp": "soon"}
    await expect_refused(bamboo, services, org, body, bad_time, 400, "malformed_signature_headers")
    # BambooHR's headers mean nothing to an integration of another provider.
    generic = await sender(api, "hr")
    await expect_refused(generic, services, org, body, bamboo_headers(generic.secret, body), 400,
                         "missing_signature_headers")


async def test_bamboohr_integration_takes_the_key_bamboohr_generated(api: Api, services: Services, org: Org) -> None:
    user = await api.user()
    key, newer = "bhr_" + "k" * 40, "bhr_" + "n" * 40
    made = await api.ok("POST", "/api/v1/integrations", {"kind": "hr", "name": "BambooHR", "provider": "bamboohr",
                                                         "role": "Administrator with Billing", "secret": key})
    assert "secret" not in made  # the sender's own key is never echoed
    bamboo = Sender(api.client, "hr", {"id": made["id"], "secret": key})
    body = bamboo_body("5150", user["email"])
    assert (await bamboo.raw(body, bamboo_headers(key, body)))[0] == 202
    # Rotated to the next key BambooHR shows: the old one works through the grace period too.
    rotated = await api.ok("POST", f"/api/v1/integrations/{made['id']}/rotate", {"secret": newer})
    assert "secret" not in rotated and rotated["rotated"] is not None
    for signing_key in (newer, key):
        again = bamboo_body(f"51{signing_key[-1]}", user["email"])
        assert (await bamboo.raw(again, bamboo_headers(signing_key, again)))[0] == 202
    # Only a BambooHR integration takes a key; a key must look like one.
    for body_, code in [({"kind": "hr", "name": "generic keyed", "provider": "generic", "secret": key},
                         "invalid_field"),
                        ({"kind": "scim", "name": "scim keyed", "secret": key}, "invalid_field"),
                        ({"kind": "hr", "name": "short key", "provider": "bamboohr", "secret": "short"},
                         "invalid_field"),
                        ({"kind": "hr", "name": "spaced key", "provider": "bamboohr", "secret": "a key " * 5},
                         "invalid_field"),
                        ({"kind": "hr", "name": "long key", "provider": "bamboohr", "secret": "k" * 201},
                         "invalid_field")]:
        status, refused = await api.post("/api/v1/integrations", {"role": "Administrator with Billing", **body_})
        assert (status, refused["error"]["code"]) == (400, code), body_
    async with services.session_factory() as session:
        stored = (await session.execute(sa.select(orm.integrations.c.secret_encrypted).where(
            orm.integrations.c.id == made["id"]))).scalar_one()
        records = [r.body for r in await session.execute(sa.select(orm.insights_events.c.body).where(
            orm.insights_events.c.organization_id == org.id))]
    assert key not in stored and newer not in stored  # sealed, not stored as given
    assert not any(key in json.dumps(r) or newer in json.dumps(r) for r in records)


async def test_unknown_integration_or_kind_is_404(api: Api, services: Services, org: Org) -> None:
    user = await api.user()
    hr = await sender(api, "hr")
    body = json.dumps(event("employee.suspended", email=user["email"])).encode()
    headers = standard_headers(hr.secret, body)
    for path in ("/webhooks/hr/nope", f"/webhooks/directory/{hr.id}", "/webhooks/hr/" + "a" * 300):
        response = await api.client.post(path, data=body, headers=headers)
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "integration_not_found"
    assert await jobs_of(services, org.id) == []


async def test_a_rotation_counts_at_once_for_a_receiver_holding_the_old_secret(api: Api, services: Services) -> None:
    user = await api.user()
    hr = await sender(api, "hr")
    assert (await hr.send(event("employee.suspended", email=user["email"])))[0] == 202  # now cached
    rotated = await api.ok("POST", f"/api/v1/integrations/{hr.id}/rotate")
    assert (await hr.send(event("employee.suspended", email=user["email"]), secret=rotated["secret"]))[0] == 202
