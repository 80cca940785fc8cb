"""What SCIM reads: users and groups of one organization, filtered, sorted and paged in SQL.

Paging is by a fixed order (the sort key, then the id). A provider reads a directory page after
page; the position where a page ended is remembered, so the next page seeks from there through
the index instead of counting rows from the start: deep pages cost what the first one does, and
each request holds one page in memory.

A filter or a sortBy adminlink cannot apply raises ``FilterRefused`` or ``SortRefused``; the SCIM
layer answers them (``invalidFilter``, ``invalidValue``).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from scim2_models.path import Present
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from service.adapters import orm
from service.adapters.repository import Groups
from service.adapters.scim_filters import AttributeMap, Clause, FilterRefused, MultiValued, Scalar, Translator, parse
from service.domain.model import UserState
from service.domain.versions import group_version, user_version

USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"  # RFC 7643 §8.7.1
GROUP_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:Group"

users, profiles, groups, members = orm.users, orm.scim_user_profiles, orm.groups, orm.group_members
_member_of = orm.group_members.alias("member_of")
_member_group = orm.groups.alias("member_group")
_group_member = orm.group_members.alias("group_member")


def _in_group(condition: Clause) -> Clause:
    joined = _member_of.join(_member_group, _member_group.c.id == _member_of.c.group_id)
    return sa.exists(sa.select(1).select_from(joined).where(
        _member_of.c.user_id == users.c.id, _member_of.c.organization_id == users.c.organization_id,
        condition))


def _has_member(condition: Clause) -> Clause:
    return sa.exists().where(_group_member.c.group_id == groups.c.id,
                             _group_member.c.organization_id == groups.c.organization_id, condition)


USER_ATTRIBUTES = AttributeMap(
    schema=USER_SCHEMA,
    scalars={
        "id": Scalar(users.c.id, case_exact=True, nullable=False),
        "externalid": Scalar(users.c.external_id, case_exact=True),
        "username": Scalar(users.c.username, nullable=False),
        "name.givenname": Scalar(users.c.firstname, nullable=False, present=users.c.firstname != ""),
        "name.familyname": Scalar(users.c.lastname, nullable=False, present=users.c.lastname != ""),
        "displayname": Scalar(profiles.c.display_name),
        "emails.value": Scalar(users.c.email, nullable=False),
        "emails.type": Scalar(sa.func.coalesce(profiles.c.email_type, "work"), nullable=False),
        "emails.primary": Scalar(sa.true(), kind="boolean", nullable=False),
        "active": Scalar(users.c.state == UserState.ACTIVATED.value, kind="boolean", nullable=False),
        "meta.created": Scalar(users.c.created_at, kind="datetime", nullable=False),
        "meta.lastmodified": Scalar(sa.func.coalesce(users.c.updated_at, users.c.created_at), kind="datetime",
                                    nullable=False),
    },
    multi_valued={"groups": MultiValued(_in_group, {
        "value": Scalar(_member_of.c.group_id, case_exact=True, nullable=False),
        "display": Scalar(_member_group.c.display_name, nullable=False),
    })},
    single_entry=frozenset({"emails"}),
)

GROUP_ATTRIBUTES = AttributeMap(
    schema=GROUP_SCHEMA,
    scalars={
        "id": Scalar(groups.c.id, case_exact=True, nullable=False),
        "externalid": Scalar(groups.c.external_id, case_exact=True),
        "displayname": Scalar(groups.c.display_name, nullable=False),
        "meta.created": Scalar(groups.c.created_at, kind="datetime", nullable=False),
        "meta.lastmodified": Scalar(sa.func.coalesce(groups.c.updated_at, groups.c.created_at), kind="datetime",
                                    nullable=False),
    },
    multi_valued={"members": MultiValued(_has_member, {
        "value": Scalar(_group_member.c.user_id, case_exact=True, nullable=False),
        "type": Scalar(sa.literal("User"), nullable=False),
    })},
)


ATTRIBUTES = {"User": USER_ATTRIBUTES, "Group": GROUP_ATTRIBUTES}


class SortRefused(Exception):
    """A sortBy that names no attribute adminlink can sort on."""

    def __init__(self, sort_by: str) -> None:
        self.detail = f"sortBy: {sort_by!r} is not an attribute adminlink can sort on"
        super().__init__(self.detail)


@dataclass(frozen=True)
class UserRecord:
    row: Any  # a users row
    display_name: str | None
    email_type: str | None
    attributes: dict[str, Any]
    groups: list[tuple[str, str]]
    version: str


@dataclass(frozen=True)
class GroupRecord:
    row: Any  # a groups row
    member_ids: list[str]
    version: str


@dataclass(frozen=True)
class ListQuery:
    filter: str | None
    start_index: int
    count: int
    sort_by: str | None
    descending: bool


class Positions:
    """Where recent pages ended: (query, next start index) -> (sort key, id) of the row before."""

    def __init__(self, size: int = 4096) -> None:
        self.size = size
        self.seen: OrderedDict[tuple[Any, ...], tuple[Any, str]] = OrderedDict()

    def get(self, key: tuple[Any, ...]) -> tuple[Any, str] | None:
        found = self.seen.get(key)
        if found is not None:
            self.seen.move_to_end(key)
        return found

    def put(self, key: tuple[Any, ...], position: tuple[Any, str]) -> None:
        self.seen[key] = position
        self.seen.move_to_end(key)
        while len(self.seen) > self.size:
            self.seen.popitem(last=False)


POSITIONS = Positions()


class Directory:
    def __init__(self, session: AsyncSession, org_id: str) -> None:
        self.session = session
        self.org_id = org_id
        self.dialect = session.bind.dialect.name if session.bind is not None else "postgresql"

    def refusal(self, query: ListQuery, resource: str) -> FilterRefused | None:
        """Why the query's filter cannot apply to a resource type ("User", "Group"), if it cannot."""
        if not query.filter:
            return None
        try:
            Translator(ATTRIBUTES[resource], self.dialect).where(parse(query.filter))
        except FilterRefused as refusal:
            return refusal
        return None

    # --- users -------------------------------------------------------------------------------

    def _user_select(self) -> sa.Select[Any]:
        return (sa.select(users, profiles.c.display_name, profiles.c.email_type, profiles.c.attributes)
                .select_from(users.outerjoin(profiles, profiles.c.user_id == users.c.id)))

    def _visible_users(self) -> list[Clause]:
        return [users.c.organization_id == self.org_id, users.c.scim_deleted_at.is_(None)]

    async def _user_records(self, rows: list[Any]) -> list[UserRecord]:
        memberships = await Groups(self.session).of_users(self.org_id, [r.id for r in rows]) if rows else {}
        records = []
        for row in rows:
            attributes = row.attributes or {}
            joined = memberships.get(row.id, [])
            profile = _Profile(row.display_name, row.email_type, row.attributes)
            records.append(UserRecord(row, row.display_name, row.email_type, attributes, joined,
                                      user_version(row, profile, joined)))
        return records

    async def user(self, user_id: str) -> UserRecord | None:
        query = self._user_select().where(*self._visible_users(), users.c.id == user_id)
        row = (await self.session.execute(query)).one_or_none()
        return (await self._user_records([row]))[0] if row is not None else None

    async def users(self, query: ListQuery) -> tuple[int, list[UserRecord]]:
        total, rows = await self._page("User", self._user_select(), users, USER_ATTRIBUTES,
                                       self._visible_users(), query)
        return total, await self._user_records(rows)

    # --- groups ------------------------------------------------------------------------------

    async def _group_records(self, rows: list[Any], with_members: bool) -> list[GroupRecord]:
        repository = Groups(self.session)
        records = []
        for row in rows:
            member_ids = await repository.member_ids(self.org_id, row.id)
            records.append(GroupRecord(row, member_ids if with_members else [],
                                       group_version(row, member_ids)))
        return records

    async def group(self, group_id: str, with_members: bool = True) -> GroupRecord | None:
        query = sa.select(groups).where(groups.c.organization_id == self.org_id, groups.c.id == group_id)
        row = (await self.session.execute(query)).one_or_none()
        return (await self._group_records([row], with_members))[0] if row is not None else None

    async def groups(self, query: ListQuery, with_members: bool) -> tuple[int, list[GroupRecord]]:
        total, rows = await self._page("Group", sa.select(groups), groups, GROUP_ATTRIBUTES,
                                       [groups.c.organization_id == self.org_id], query)
        return total, await self._group_records(rows, with_members)

    # --- paging ------------------------------------------------------------------------------

    def _sort_key(self, table: sa.Table, attributes: AttributeMap, sort_by: str | None) -> Any:
        if not sort_by:
            return table.c.created_at
        try:
            node = parse(f"{sort_by} pr")
            if not isinstance(node, Present):  # SearchRequest lets only one attribute path through
                raise SortRefused(sort_by)
            scalar = Translator(attributes, self.dialect).scalar(node.attr_path)
        except FilterRefused as exc:
            raise SortRefused(sort_by) from exc
        if scalar.kind == "boolean":
            raise SortRefused(sort_by)
        return scalar.sort_key()

    async def _page(self, resource: str, select: sa.Select[Any], table: sa.Table, attributes: AttributeMap,
                    where: list[Clause], query: ListQuery) -> tuple[int, list[Any]]:
        if query.filter:
            where = [*where, Translator(attributes, self.dialect).where(parse(query.filter))]
        key = self._sort_key(table, attributes, query.sort_by)
        counted = select.with_only_columns(sa.func.count()).where(*where)
        if query.count == 0:
            return int(await self.session.scalar(counted) or 0), []
        ordered = (key.desc(), table.c.id.desc()) if query.descending else (key.asc(), table.c.id.asc())
        page = select.add_columns(key.label("sort_key")).where(*where).order_by(*ordered).limit(query.count)
        scope = (resource, self.org_id, query.filter, (query.sort_by or "").lower(), query.descending)
        seek = POSITIONS.get((*scope, query.start_index))
        if seek is not None:
            value, last_id = seek
            if query.descending:
                page = page.where(sa.or_(key < value, sa.and_(key == value, table.c.id < last_id)))
            else:
                page = page.where(sa.or_(key > value, sa.and_(key == value, table.c.id > last_id)))
        else:
            page = page.offset(query.start_index - 1)
        rows = list((await self.session.execute(page)).all())
        if rows:
            POSITIONS.put((*scope, query.start_index + len(rows)), (rows[-1].sort_key, rows[-1].id))
        if query.start_index == 1 and len(rows) < query.count:
            return len(rows), rows  # the whole result is on this page: no count needed (a lookup)
        return int(await self.session.scalar(counted) or 0), rows


@dataclass(frozen=True)
class _Profile:
    display_name: str | None
    email_type: str | None
    attributes: dict[str, Any] | None



async def scim_integration(session_factory: async_sessionmaker[AsyncSession], digest: str) -> Any | None:
    """The SCIM integration whose bearer token hashes to ``digest`` (the unique index), if any."""
    table = orm.integrations
    query = sa.select(table).where(table.c.token_hash == digest, table.c.kind == "scim")
    async with session_factory() as session:
        return (await session.execute(query)).one_or_none()
