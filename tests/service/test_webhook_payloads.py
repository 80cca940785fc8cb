"""Webhook payloads: the generic schema and the BambooHR and Personio adapters; a body that
cannot be taken is a 4xx with a clear code and records nothing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from service.bootstrap import Services
from service.deliveries import Subject
from tests.conftest import Api, Org
from tests.service.test_webhook_support import (  # clean_jobs: an autouse fixture
    clean_jobs,  # noqa: F401
    event,
    iso,
    jobs_of,
    sender,
    standard_headers,
)
from webhooks import payloads
from webhooks.payloads import PayloadError


async def test_unknown_types_subjects_and_bad_bodies_are_4xx(api: Api, services: Services, org: Org) -> None:
    user = await api.user()
    hr = await sender(api, "hr")
    directory = await sender(api, "directory")
    future = datetime.now(UTC) + timedelta(hours=1)
    cases: list[tuple[Any, Any, int, str]] = [
        (hr, event("employee.promoted", email=user["email"]), 422, "unknown_event_type"),
        (hr, event("user.suspended", email=user["email"]), 422, "unknown_event_type"),
        (directory, event("employee.terminated", email=user["email"]), 422, "unknown_event_type"),
        (hr, event("employee.terminated", email="nobody@acme.test"), 422, "unknown_subject"),
        (hr, event("employee.terminated", employee_id="E-404"), 422, "unknown_subject"),
        (hr, event("employee.terminated", badge="7"), 422, "unknown_subject"),
        (hr, {**event("employee.terminated", email=user["email"]), "subject": "pat"}, 422, "unknown_subject"),
        (hr, {**event("employee.terminated", email=user["email"]), "occurred_at": "last week"}, 422,
         "invalid_payload"),
        (hr, {k: v for k, v in event("employee.terminated", email=user["email"]).items() if k != "type"}, 422,
         "invalid_payload"),
        (hr, event("employee.terminated", email=user["email"], at=future), 422, "occurred_at_in_future"),
        (hr, event("employee.email_changed", email=user["email"]), 422, "invalid_payload"),
        (hr, event("employee.email_changed", email=user["email"], data={"email": 7}), 422, "invalid_payload"),
        (directory, event("admin_role.assigned", email=user["email"], data={"role": "Emperor"}), 422,
         "invalid_payload"),
        (hr, [1, 2], 422, "invalid_payload"),
        (hr, event("employee.terminated", email=user["email"] + "\x00"), 422, "invalid_payload"),
        (hr, event("employee.email_changed", email=user["email"], data={"email": "new\x00@acme.test"}), 422,
         "invalid_payload"),
        (hr, event("employee.terminated", email=user["email"] + "\ud800"), 422, "invalid_payload"),
        (hr, event("employee.terminated", email=user["email"], employee_id="\udfff"), 422, "invalid_payload"),
        (hr, event("employee.email_changed", email=user["email"], data={"email": "not an email"}), 422,
         "invalid_payload"),
    ]
    for receiver, payload, status, code in cases:
        got_status, got, _ = await receiver.send(payload)
        assert (got_status, got["error"]["code"]) == (status, code), (payload, got)
    not_a_number = json.dumps(event("employee.terminated", email=user["email"], data={"n": float("nan")})).encode()
    for body in (b"{not json", not_a_number):
        response = await api.client.post(hr.path, data=body, headers=standard_headers(hr.secret, body))
        assert response.status == 400 and (await response.json())["error"]["code"] == "invalid_json", body
    assert await jobs_of(services, org.id) == []


async def test_other_organizations_users_are_unknown(api: Api, services: Services, client: Any) -> None:
    from tests.conftest import bootstrap_org

    other = await bootstrap_org(services, "Other")
    theirs = await Api(client, other.key).user()
    hr = await sender(api, "hr")
    status, body, _ = await hr.send(event("employee.terminated", email=theirs["email"]))
    assert (status, body["error"]["code"]) == (422, "unknown_subject")


def test_generic_schema() -> None:
    at = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    delivery = payloads.parse("generic", "hr", json.dumps({
        "id": "evt_1", "type": "employee.email_changed", "occurred_at": "2026-03-01T10:30:00+01:00",
        "subject": {"employee_id": 1042, "email": "pat@acme.test"}, "data": {"email": "pat.lee@acme.test"},
    }).encode())
    assert delivery.event_id == "evt_1"
    [only] = delivery.events
    assert (only.type, only.occurred_at, only.data) == ("employee.email_changed", at, {"email": "pat.lee@acme.test"})
    assert only.subject == Subject(employee_id="1042", email="pat@acme.test")


def bamboo(*employees: dict[str, Any]) -> bytes:
    return json.dumps({"employees": list(employees)}).encode()


def test_bamboohr_field_based_payloads() -> None:
    at = "2026-03-01T12:00:00+00:00"
    delivery = payloads.parse("bamboohr", "hr", bamboo(
        {"id": "101", "timestamp": at, "changedFields": ["Employment Status", "Status"],
         "fields": {"Employment Status": "Terminated", "Status": "Inactive", "Work Email": "a@acme.test"}},
        {"id": "102", "timestamp": at, "changedFields": ["Work Email"], "fields": {"Work Email": "new@acme.test"}},
        {"id": "103", "timestamp": at, "changedFields": ["Employment Status"],
         "fields": {"Employment Status": "Leave of Absence"}},
        {"id": "104", "timestamp": at, "changedFields": ["Status"], "fields": {"Status": "Active"}},
        {"id": "105", "timestamp": at, "changedFields": ["Job Title"], "fields": {"Job Title": "CFO"}},
    ))
    got = [(e.type, e.subject, e.data) for e in delivery.events]
    assert got == [
        ("employee.terminated", Subject(employee_id="101", email="a@acme.test"), {}),
        ("employee.email_changed", Subject(employee_id="102"), {"email": "new@acme.test"}),
        ("employee.leave_started", Subject(employee_id="103"), {}),
        ("employee.returned", Subject(employee_id="104"), {}),
    ]
    assert delivery.event_id is None
    with pytest.raises(PayloadError) as empty:
        payloads.parse("bamboohr", "hr", json.dumps({"employees": []}).encode())
    assert empty.value.code == "invalid_payload"
    with pytest.raises(PayloadError) as no_id:
        payloads.parse("bamboohr", "hr", bamboo({"timestamp": at, "changedFields": ["Status"]}))
    assert no_id.value.code == "invalid_payload"


def personio(name: str, payload: dict[str, Any], **meta: str) -> bytes:
    return json.dumps({"company_id": "9001", "event_name": name, "occurred_at": iso(datetime.now(UTC)),
                       "payload": payload, "meta": meta}).encode()


def test_personio_payloads() -> None:
    terminated = payloads.parse("personio", "hr", personio("employment.terminated",
                                                            {"person": {"id": "p-7"}, "email": "pat@acme.test"},
                                                            event_id="e-1"))
    assert terminated.event_id == "e-1"
    assert [(e.type, e.subject) for e in terminated.events] == [
        ("employee.terminated", Subject(employee_id="p-7", email="pat@acme.test"))]
    started = payloads.parse("personio", "hr", personio("employment.started", {"person_id": "p-7"}))
    assert [e.type for e in started.events] == ["employee.returned"]
    renamed = payloads.parse("personio", "hr", personio("person.updated", {"id": "p-7", "email": "p@acme.test"}))
    assert [(e.type, e.subject, e.data) for e in renamed.events] == [
        ("employee.email_changed", Subject(employee_id="p-7"), {"email": "p@acme.test"})]
    assert payloads.parse("personio", "hr", personio("person.updated", {"id": "p-7"})).events == ()
    assert payloads.parse("personio", "hr", personio("employment.updated", {"id": "x"})).events == ()
    with pytest.raises(PayloadError) as unknown:
        payloads.parse("personio", "hr", personio("absence.created", {"id": "x"}))
    assert unknown.value.code == "unknown_event_type"
    with pytest.raises(PayloadError) as shapeless:
        payloads.parse("personio", "hr", json.dumps({"event_name": "employment.terminated"}).encode())
    assert shapeless.value.code == "invalid_payload"
