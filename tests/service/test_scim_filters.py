"""SCIM filters become SQL: operators, logic, value paths, case rules, escaped wildcards, refusals,
and the indexes lookups use."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest
import sqlalchemy as sa

from service.adapters import orm
from service.adapters.scim_directory import USER_ATTRIBUTES, Directory, ListQuery
from service.adapters.scim_filters import translate
from service.bootstrap import Services
from service.domain.model import Role, new_id, now
from tests.conftest import Api
from tests.service.test_scim_support import Scim, scim_integration


async def names(scim: Scim, expression: str) -> list[str]:
    body = await scim.ok("GET", f"/Users?count=1000&filter={quote(expression)}")
    assert body["totalResults"] == len(body["Resources"])
    return sorted(r["userName"] for r in body["Resources"])


@pytest.fixture
async def people(api: Api) -> tuple[Scim, dict[str, Any]]:
    """An organization of its own with a few users whose attributes the filters pick among."""
    scim = await scim_integration(api, Role.BILLING)
    made = {
        "alice": await scim.create_user("alice", externalId="EXT-Alice", displayName="Alice Liddell",
                                        name={"givenName": "Alice", "familyName": "Liddell"},
                                        emails=[{"value": "alice@example.com", "type": "work", "primary": True}]),
        "bob": await scim.create_user("bob", externalId="ext-bob", title="Engineer",
                                      name={"givenName": "Bob", "familyName": "Stone"},
                                      emails=[{"value": "bob@corp.example.org", "type": "home", "primary": True}]),
        "100%_sure": await scim.create_user("100%_sure", name={"givenName": "Per", "familyName": "Cent"}),
        "100x_sure": await scim.create_user("100x_sure", active=False, name={"givenName": "", "familyName": "X"}),
    }
    return scim, made


async def test_comparison_operators(people: tuple[Scim, dict[str, Any]]) -> None:
    scim, _ = people
    assert await names(scim, 'userName eq "ALICE"') == ["alice"]  # userName is not caseExact
    assert await names(scim, 'userName ne "alice"') == ["100%_sure", "100x_sure", "bob"]
    assert await names(scim, 'userName sw "AL"') == ["alice"]
    assert await names(scim, 'userName ew "OB"') == ["bob"]
    assert await names(scim, 'name.familyName co "TON"') == ["bob"]
    assert await names(scim, 'userName gt "b"') == ["bob"]
    assert await names(scim, 'userName le "alice"') == ["100%_sure", "100x_sure", "alice"]
    assert await names(scim, "displayName pr") == ["alice"]
    assert await names(scim, "name.givenName pr") == ["100%_sure", "alice", "bob"]


async def test_like_wildcards_in_values_are_plain_characters(people: tuple[Scim, dict[str, Any]]) -> None:
    scim, _ = people
    assert await names(scim, 'userName sw "100%"') == ["100%_sure"]
    assert await names(scim, 'userName co "%_"') == ["100%_sure"]
    assert await names(scim, 'userName co "_"') == ["100%_sure", "100x_sure"]
    assert await names(scim, 'userName co "0_s"') == []


async def test_case_exact_attributes(people: tuple[Scim, dict[str, Any]]) -> None:
    scim, _ = people
    assert await names(scim, 'externalId eq "EXT-Alice"') == ["alice"]
    assert await names(scim, 'externalId eq "ext-alice"') == []
    assert await names(scim, 'externalId sw "ext"') == ["bob"]
    assert await names(scim, 'externalId co "Alic"') == ["alice"]
    assert await names(scim, 'externalId ew "BOB"') == []


async def test_logic_grouping_and_not(people: tuple[Scim, dict[str, Any]]) -> None:
    scim, _ = people
    assert await names(scim, 'userName eq "alice" or userName eq "bob"') == ["alice", "bob"]
    assert await names(scim, '(userName sw "a" or userName sw "b") and active eq true') == ["alice", "bob"]
    assert await names(scim, 'not (userName sw "1")') == ["alice", "bob"]
    assert await names(scim, "active eq false") == ["100x_sure"]
    assert await names(scim, 'not (displayName pr) and userName sw "1"') == [
        "100%_sure", "100x_sure"]
    # An absent externalId is "not equal": ne and not agree.
    assert await names(scim, 'externalId ne "ext-bob"') == ["100%_sure", "100x_sure", "alice"]
    assert await names(scim, 'not (externalId eq "ext-bob")') == ["100%_sure", "100x_sure", "alice"]


async def test_value_paths_and_emails(people: tuple[Scim, dict[str, Any]]) -> None:
    scim, _ = people
    assert await names(scim, 'emails[type eq "work" and value co "@example.com"]') == [
        "100%_sure", "100x_sure", "alice"]
    assert await names(scim, 'emails[type eq "work" and value sw "alice@"]') == ["alice"]
    assert await names(scim, 'emails[type eq "home"]') == ["bob"]
    assert await names(scim, 'emails.value ew "example.org"') == ["bob"]
    assert await names(scim, 'emails co "ALICE@"') == ["alice"]
    assert await names(scim, 'urn:ietf:params:scim:schemas:core:2.0:User:userName eq "bob"') == ["bob"]


async def test_datetimes(people: tuple[Scim, dict[str, Any]]) -> None:
    scim, made = people
    created = made["bob"]["meta"]["created"]
    later = await names(scim, f'meta.created gt "{created}"')
    assert "alice" not in later and "bob" not in later and "100%_sure" in later
    assert "bob" in await names(scim, f'meta.lastModified ge "{created}"')


@pytest.mark.parametrize("expression", [
    'nickName eq "x"',  # an attribute adminlink keeps but does not filter on
    'title eq "Engineer"',
    'urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq "x"',
    'unknownAttribute eq "x"',
    'userName eq',  # not a filter
    'active gt true',  # ordering on a boolean
    'meta.created co "2020"',  # a substring of a dateTime
    'meta.created gt "yesterday"',
    'userName eq 12',
    'emails[type eq "work" and display[value eq "x"]]',  # nested value paths
    'phoneNumbers[type eq "work"]',
])
async def test_unmapped_or_malformed_filters_answer_invalid_filter(
        people: tuple[Scim, dict[str, Any]], expression: str) -> None:
    scim, _ = people
    status, body = await scim.call("GET", f"/Users?filter={quote(expression)}")
    assert status == 400, body
    assert body["scimType"] == "invalidFilter"


@pytest.mark.parametrize("sort_by", ["active", "nickName", "urn:example:Other:userName"])
async def test_a_sort_by_that_names_no_sortable_attribute_answers_invalid_value(
        people: tuple[Scim, dict[str, Any]], sort_by: str) -> None:
    scim, _ = people
    status, body = await scim.call("GET", f"/Users?sortBy={quote(sort_by)}")
    assert (status, body["scimType"]) == (400, "invalidValue"), body
    assert body["detail"] == f"sortBy: {sort_by!r} is not an attribute adminlink can sort on"


async def test_lookups_use_indexes(services: Services, api: Api) -> None:
    """userName, externalId and email lookups compile to queries the planner serves from an index."""
    scim = await scim_integration(api, Role.BILLING)
    async with services.session_factory() as session:
        org_id = (await session.execute(sa.select(orm.integrations.c.organization_id).where(
            orm.integrations.c.id == scim.integration["id"]))).scalar_one()
        # Enough rows, and fresh statistics, for the planner to weigh its choices as it would in use.
        await session.execute(sa.insert(orm.users), [
            {"id": new_id(), "organization_id": org_id, "email": f"ix-{n}@example.com", "username": f"ix-{n}",
             "state": "ACTIVATED", "password_authority": "adminlink", "created_at": now(),
             "external_id": f"ext-{n}"} for n in range(500)])
        await session.commit()
        await session.execute(sa.text("ANALYZE"))
        reader = Directory(session, org_id)
        for expression, index in (('userName eq "x"', "uq_users_org_username"),
                                  ('externalId eq "x"', "ix_users_org_external_id"),
                                  ('emails.value eq "x@example.com"', "uq_users_org_email")):
            where = translate(expression, USER_ATTRIBUTES, reader.dialect)
            query = reader._user_select().where(*reader._visible_users(), where)
            compiled = query.compile(session.bind, compile_kwargs={"literal_binds": True})
            if reader.dialect == "sqlite":
                plan = " ".join(str(r) for r in (await session.execute(sa.text(f"EXPLAIN QUERY PLAN {compiled}"))))
            else:
                await session.execute(sa.text("SET LOCAL enable_seqscan = off"))
                plan = " ".join(str(r) for r in (await session.execute(sa.text(f"EXPLAIN {compiled}"))))
            assert index in plan, (expression, plan)


async def test_paging_is_stable_and_seeks_past_deep_pages(api: Api) -> None:
    scim = await scim_integration(api, Role.BILLING)
    made = [await scim.create_user(f"page-{n:02d}") for n in range(23)]
    seen: list[str] = []
    for start in (1, 11, 21):
        body = await scim.ok("GET", f"/Users?startIndex={start}&count=10&sortBy=userName")
        assert body["totalResults"] == 23 and body["startIndex"] == start
        seen += [r["userName"] for r in body["Resources"]]
    assert seen == sorted(u["userName"] for u in made)
    again = await scim.ok("GET", "/Users?startIndex=11&count=10&sortBy=userName")
    assert [r["userName"] for r in again["Resources"]] == seen[10:20]
    descending = await scim.ok("GET", "/Users?startIndex=1&count=5&sortBy=userName&sortOrder=descending")
    assert [r["userName"] for r in descending["Resources"]] == sorted(seen, reverse=True)[:5]
    by_creation = await scim.ok("GET", "/Users?count=3")
    assert [r["id"] for r in by_creation["Resources"]] == [u["id"] for u in made[:3]]


async def test_the_page_after_a_page_seeks_from_its_last_row(services: Services, api: Api) -> None:
    scim = await scim_integration(api, Role.BILLING)
    for n in range(6):
        await scim.create_user(f"seek-{n}")
    org_id = scim.integration["id"]  # any id: only the organization of the integration matters below
    async with services.session_factory() as session:
        from service.adapters.scim_directory import POSITIONS

        actor_org = (await session.execute(sa.text("SELECT organization_id FROM integrations WHERE id = :i"),
                                           {"i": org_id})).scalar_one()
        directory = Directory(session, actor_org)
        query = ListQuery(filter=None, start_index=1, count=3, sort_by=None, descending=False)
        _, first = await directory.users(query)
        assert POSITIONS.get(("User", actor_org, None, "", False, 4)) == (first[-1].row.created_at, first[-1].row.id)
        _, second = await directory.users(ListQuery(None, 4, 3, None, False))
        assert [r.row.username for r in first + second] == [f"seek-{n}" for n in range(6)]
