"""The JumpCloud-compatible Directory Insights query API over real records: the seed's admin-login
filter, and/or/not with dot paths and value lists, paging through search_after, count, distinct,
projections, refusals, organization scoping and retention."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp.test_utils import TestClient

from service import insights, insights_query
from service.adapters import insights_store, orm
from service.bootstrap import Services
from service.domain.commands import Actor
from service.domain.errors import InvalidRequest
from service.domain.events import Recorded, Resource
from service.domain.model import Role, new_id, now
from tests.conftest import Org, bootstrap_org
from workers.maintenance import purge_expired_insights

EVENTS = "/insights/directory/v1/events"
SEED_FILTER = {"and": [{"initiated_by.administrator": True}, {"target_resource.type": "admin_portal"}]}
LONG_AGO = "2000-01-01T00:00:00Z"


def admin_actor(org: Org, email: str = "ops@acme.test") -> Actor:
    return Actor(org.id, org.admin_id, "admin", Role.BILLING, email=email, client_ip="10.0.0.7",
                 useragent="browser")


def user_actor(org: Org, user_id: str = "u1", email: str = "pat@acme.test") -> Actor:
    return Actor(org.id, user_id, "user", Role.READ_ONLY, email=email, source="user_portal")


async def write(services: Services, actor: Actor, *records: Recorded) -> None:
    """Records through the unit of work, as every change writes them (one timestamp per commit)."""
    async with services.uow(actor) as uow:
        uow.collect(*records)
        await uow.commit()


async def write_at(services: Services, actor: Actor, at: datetime, record: Recorded) -> str:
    """A record with a chosen timestamp, in the exact row shape the unit of work writes."""
    event_id = new_id()
    body = insights.record_body(event_id, record, actor, at)
    async with services.session_factory() as session, session.begin():
        await session.execute(orm.insights_events.insert().values(
            id=event_id, organization_id=actor.organization_id, event_type=record.event_type,
            service=body["service"], timestamp=at, success=record.success,
            initiated_by_administrator=bool(body["initiated_by"].get("administrator")),
            target_resource_type=(body.get("target_resource") or {}).get("type"), body=body,
        ))
    return event_id


def login(event_type: str, portal: str | None, success: bool = True) -> Recorded:
    extra: dict[str, Any] = {"mfa_meta": {"type": "totp"}}
    if portal:
        extra["target_resource"] = {"type": portal}
    return Recorded(event_type, Resource("user", "u1", email="pat@acme.test"), success=success, extra=extra)


async def query(client: TestClient, org: Org, body: dict[str, Any], path: str = EVENTS) -> tuple[int, Any, Any]:
    response = await client.post(path, json=body, headers=org.headers)
    return response.status, await response.json(), response.headers


async def test_the_seeds_filter_finds_exactly_admin_portal_sign_ins(client: TestClient, services: Services,
                                                                   org: Org) -> None:
    admin, user = admin_actor(org), user_actor(org)
    await write(services, admin, login("user_login_attempt", "admin_portal"),
                login("admin_login_attempt", "admin_portal"), login("admin_login_attempt", "admin_portal", False))
    await write(services, user, login("user_login_attempt", None), login("user_login_attempt", "admin_portal"))
    await write(services, admin, Recorded("user_update", Resource("user", "u2")))
    status, body, headers = await query(client, org, {"service": ["all"], "start_time": LONG_AGO,
                                                      "search_term": SEED_FILTER})
    assert status == 200
    assert sorted((e["event_type"], e["success"]) for e in body) == [
        ("admin_login_attempt", False), ("admin_login_attempt", True), ("user_login_attempt", True)]
    assert all(e["initiated_by"]["administrator"] and e["target_resource"]["type"] == "admin_portal" for e in body)
    assert headers["X-Result-Count"] == "3" and headers["X-Limit"] == "1000" and headers["X-Sort"] == "ASC"
    last = json.loads(headers["X-Search_after"])
    assert last[1] == body[-1]["id"]
    assert headers["X-Request-Id"]


async def test_paging_through_search_after_has_no_gaps_or_repeats(client: TestClient, services: Services,
                                                                  org: Org) -> None:
    admin = admin_actor(org)
    base = now() - timedelta(hours=2)
    written = [await write_at(services, admin, base + timedelta(seconds=i, microseconds=i * 7),
                              Recorded("user_update", Resource("user", f"u{i}"))) for i in range(9)]
    # Eleven events sharing one timestamp: only the id tells them apart.
    await write(services, admin, *[Recorded("user_update", Resource("user", f"same{i}")) for i in range(11)])
    for sort in ("ASC", "desc"):
        seen: list[str] = []
        search_after: Any = None
        while True:
            body = {"service": ["directory"], "start_time": (base - timedelta(minutes=1)).isoformat(),
                    "limit": 4, "sort": sort, "search_term": {"and": [{"event_type": "user_update"}]}}
            if search_after is not None:
                body["search_after"] = search_after
            status, page, headers = await query(client, org, body)
            assert status == 200, page
            seen += [e["id"] for e in page]
            search_after = json.loads(headers["X-Search_after"])
            if int(headers["X-Result-Count"]) < int(headers["X-Limit"]):
                break
        assert len(seen) == len(set(seen)) == 20
        assert set(written) <= set(seen)
        async with services.session_factory() as session:
            ordered = [r.id for r in await session.execute(
                sa.select(orm.insights_events.c.id, orm.insights_events.c.timestamp)
                .where(orm.insights_events.c.organization_id == org.id,
                       orm.insights_events.c.event_type == "user_update")
                .order_by(orm.insights_events.c.timestamp, orm.insights_events.c.id))]
        assert seen == (ordered if sort == "ASC" else ordered[::-1])


async def test_or_not_value_lists_and_dot_paths(client: TestClient, services: Services, org: Org) -> None:
    admin = admin_actor(org)
    await write(services, admin, Recorded("user_create", Resource("user", "a", email="Ann@Acme.test")),
                Recorded("user_delete", Resource("user", "b", email="bob@acme.test")),
                Recorded("user_update", Resource("user", "c", email="cat@acme.test"), success=False),
                Recorded("admin_update", Resource("admin", "d", email="dan@acme.test")))

    async def types(search_term: dict[str, Any]) -> list[str]:
        status, body, _ = await query(client, org, {"service": ["all"], "start_time": LONG_AGO,
                                                    "search_term": search_term})
        assert status == 200, body
        return sorted(e["event_type"] for e in body)

    assert await types({"or": [{"event_type": ["user_create", "user_delete"]}, {"success": "false"}]}) == [
        "user_create", "user_delete", "user_update"]
    assert await types({"and": [{"resource.email": "ann@acme.test"}]}) == ["user_create"]  # any case
    assert await types({"and": {"resource.type": "user", "initiated_by.email": "ops@acme.test"},
                        "not": [{"event_type": "user_create"}, {"success": False}]}) == ["user_delete"]
    assert await types({"and": [{"resource.type": "user"}, {"or": [{"resource.id": "a"}, {"resource.id": "c"}]}]}) \
        == ["user_create", "user_update"]
    # "not" also keeps events that lack the field altogether (the organization's first admin_create too).
    assert await types({"not": [{"target_resource.type": "admin_portal"}, {"mfa_meta.type": "totp"}]}) == [
        "admin_create", "admin_update", "user_create", "user_delete", "user_update"]
    assert await types({"and": [{"resource.missing": None}, {"event_type": "admin_update"}]}) == ["admin_update"]


async def test_count_distinct_and_fields(client: TestClient, services: Services, org: Org,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    admin, user = admin_actor(org), user_actor(org)
    await write(services, admin, *[login("admin_login_attempt", "admin_portal") for _ in range(3)],
                Recorded("user_update", Resource("user", "x")))
    await write(services, user, login("user_login_attempt", None), login("user_login_attempt", None))
    base = {"service": ["all"], "start_time": LONG_AGO}
    status, counted, _ = await query(client, org, {**base, "search_term": SEED_FILTER}, EVENTS + "/count")
    assert (status, counted) == (200, {"count": 3})
    status, counted, _ = await query(client, org, base, EVENTS + "/count")
    assert counted == {"count": 7}  # and the organization's first admin_create
    exact = {"doc_count_error_upper_bound": 0, "sum_other_doc_count": 0}
    status, buckets, _ = await query(client, org, {**base, "field": "event_type"}, EVENTS + "/distinct")
    assert buckets == {"buckets": [{"key": "admin_login_attempt", "doc_count": 3},
                                   {"key": "user_login_attempt", "doc_count": 2},
                                   {"key": "admin_create", "doc_count": 1},
                                   {"key": "user_update", "doc_count": 1}], **exact}
    status, buckets, _ = await query(client, org, {**base, "field": "initiated_by.type"}, EVENTS + "/distinct")
    assert buckets == {"buckets": [{"key": "admin", "doc_count": 4}, {"key": "user", "doc_count": 2},
                                   {"key": "system", "doc_count": 1}], **exact}
    monkeypatch.setattr(insights_store, "MAX_DISTINCT", 2)  # as with more values than buckets
    status, buckets, _ = await query(client, org, {**base, "field": "event_type"}, EVENTS + "/distinct")
    assert buckets == {"buckets": [{"key": "admin_login_attempt", "doc_count": 3},
                                   {"key": "user_login_attempt", "doc_count": 2}],
                       "doc_count_error_upper_bound": 0, "sum_other_doc_count": 2}
    status, body, _ = await query(client, org, {**base, "fields": ["event_type", "initiated_by.email"],
                                                "search_term": {"and": [{"event_type": "user_update"}]}})
    assert body == [{"event_type": "user_update", "initiated_by": {"email": "ops@acme.test"}}]


async def test_null_matches_a_missing_field_of_the_indexed_ones_too(client: TestClient, services: Services,
                                                                     org: Org) -> None:
    await write(services, admin_actor(org), login("admin_login_attempt", "admin_portal"),
                Recorded("user_update", Resource("user", "x")))
    base = {"service": ["all"], "start_time": LONG_AGO}
    missing = {**base, "search_term": {"and": {"target_resource.type": None}}}
    _, everything, _ = await query(client, org, base, EVENTS + "/count")
    status, counted, _ = await query(client, org, missing, EVENTS + "/count")
    assert (status, counted) == (200, {"count": everything["count"] - 1})
    either = {**base, "search_term": {"and": {"target_resource.type": [None, "admin_portal"]}}}
    assert (await query(client, org, either, EVENTS + "/count"))[1] == everything
    status, _, _ = await query(client, org, {**base, "search_term": {"and": {"initiated_by.administrator": None}}})
    assert status == 200


async def test_a_long_service_list_is_one_of_each(client: TestClient, org: Org) -> None:
    """Duplicates are dropped before the query: it binds a handful of values, whatever was sent."""
    status, counted, _ = await query(client, org, {"service": ["directory"] * 40_000 + ["all"],
                                                   "start_time": LONG_AGO}, EVENTS + "/count")
    assert status == 200 and counted["count"] >= 1


def test_nul_characters_are_refused_where_the_cli_passes_them_too() -> None:
    base = {"service": ["all"], "start_time": LONG_AGO}
    for body, code in (({**base, "search_term": {"and": {"resource.email": "a\x00"}}}, "invalid_search_term"),
                       ({**base, "search_after": [1, "a\x00"]}, "invalid_search_after")):
        with pytest.raises(InvalidRequest) as refused:
            insights_query.parse("org", body, now())
        assert refused.value.code == code


async def test_bad_queries_answer_400_with_a_code(client: TestClient, org: Org) -> None:
    base: dict[str, Any] = {"service": ["all"], "start_time": LONG_AGO}
    cases = [
        ({"start_time": LONG_AGO}, "missing_field"),
        ({"service": ["all"]}, "missing_field"),
        ({"service": "all", "start_time": LONG_AGO}, "invalid_service"),
        ({"service": ["everything"], "start_time": LONG_AGO}, "invalid_service"),
        ({**base, "start_time": "yesterday"}, "invalid_time"),
        ({**base, "start_time": "2999-01-01T00:00:00Z"}, "invalid_time"),
        ({**base, "end_time": "1999-01-01T00:00:00Z"}, "invalid_time"),
        ({**base, "limit": 0}, "invalid_limit"),
        ({**base, "limit": 10_001}, "invalid_limit"),
        ({**base, "limit": "10"}, "invalid_limit"),
        ({**base, "sort": "sideways"}, "invalid_sort"),
        ({**base, "fields": []}, "invalid_fields"),
        ({**base, "fields": ["nothing_known"]}, "invalid_fields"),
        ({**base, "search_term": {"xor": []}}, "invalid_search_term"),
        ({**base, "search_term": {"and": [{"event_type": {"$gt": 1}}]}}, "invalid_search_term"),
        ({**base, "search_term": {"and": [{"bad path'--": 1}]}}, "invalid_search_term"),
        ({**base, "search_term": {"and": "event_type"}}, "invalid_search_term"),
        ({**base, "search_term": {"and": [{"success": "maybe"}]}}, "invalid_search_term"),
        ({**base, "search_after": [1, 2, 3]}, "invalid_search_after"),
        ({**base, "search_after": ["soon", "x"]}, "invalid_search_after"),
        ({**base, "surprise": 1}, "invalid_field"),
    ]
    for body, code in cases:
        status, answer, _ = await query(client, org, body)
        assert (status, answer["error"]["code"]) == (400, code), body
    response = await client.post(EVENTS, data=b"{not json", headers=org.headers)
    assert response.status == 400
    status, answer, _ = await query(client, org, base, EVENTS + "/distinct")
    assert (status, answer["error"]["code"]) == (400, "missing_field")


async def test_queries_stay_in_the_keys_organization(client: TestClient, services: Services, org: Org) -> None:
    other = await bootstrap_org(services, "Other")
    await write(services, admin_actor(other), Recorded("user_update", Resource("user", "theirs")))
    await write(services, admin_actor(org), Recorded("user_update", Resource("user", "ours")))
    status, body, _ = await query(client, org, {"service": ["all"], "start_time": LONG_AGO,
                                                "search_term": {"and": [{"event_type": "user_update"}]}})
    assert [e["resource"]["id"] for e in body] == ["ours"]
    response = await client.post(EVENTS, json={"service": ["all"], "start_time": LONG_AGO},
                                 headers={**org.headers, "x-org-id": other.id})
    assert response.status == 403
    assert (await client.post(EVENTS, json={"service": ["all"], "start_time": LONG_AGO})).status == 401


async def test_every_role_may_read_insights(client: TestClient, services: Services, org: Org) -> None:
    from tests.conftest import Api

    _, read_only = await Api(client, org.key).admin_with_key(Role.READ_ONLY)
    status, body = await read_only.call("POST", EVENTS, {"service": ["all"], "start_time": LONG_AGO})
    assert status == 200 and any(e["event_type"] == "admin_create" for e in body)


async def test_retention_removes_only_events_older_than_the_setting(services: Services, org: Org) -> None:
    admin = admin_actor(org)
    days = services.settings.insights_retention_days
    old = await write_at(services, admin, now() - timedelta(days=days, minutes=5), Recorded("user_update",
                                                                                              Resource("user", "o")))
    kept = await write_at(services, admin, now() - timedelta(days=days - 1), Recorded("user_update",
                                                                                     Resource("user", "k")))
    removed = await purge_expired_insights(services, batch=1)
    assert removed >= 1
    async with services.session_factory() as session:
        ids = set(await session.scalars(sa.select(orm.insights_events.c.id)
                                        .where(orm.insights_events.c.organization_id == org.id)))
    assert old not in ids and kept in ids


def test_search_after_keys_round_trip_to_the_microsecond() -> None:
    from service.insights_query import from_epoch_ms, to_epoch_ms

    for moment in (datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC), datetime(2024, 5, 1, tzinfo=UTC)):
        assert from_epoch_ms(to_epoch_ms(moment)) == moment
        assert from_epoch_ms(json.loads(to_epoch_ms(moment))) == moment
