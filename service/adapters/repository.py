"""Repositories: every query takes the organization and filters on it."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession

from service.adapters import orm
from service.adapters.crypto import SecretBox
from service.adapters.errors import conflicts_translated
from service.adapters.mfa import totp
from service.domain.model import Admin, Organization, Role, User, UserState, new_id, normalise_email, now


@functools.cache
def _lookup(entity: type, column: str, lower: bool, for_update: bool) -> sa.Select[Any]:
    """The statement of a point lookup, built once, at first use (the entities are mapped at
    start-up), with its values bound at execution: building a statement costs about half as
    much CPU as running it through the ORM, and most commands make two such lookups."""
    table: sa.FromClause = sa.inspect(entity).local_table
    key = sa.func.lower(table.c[column]) if lower else table.c[column]
    query: sa.Select[Any] = sa.select(entity).where(table.c.organization_id == sa.bindparam("org"),
                                                    key == sa.bindparam("value"))
    return query.with_for_update() if for_update else query


async def _one(session: AsyncSession, entity: type, org_id: str, column: str, value: str, *,
               lower: bool = False, for_update: bool = False) -> Any:
    query = _lookup(entity, column, lower, for_update)
    return (await session.scalars(query, {"org": org_id, "value": value})).one_or_none()


async def _organizations_where(session: AsyncSession, table: sa.Table, column: str, value: str,
                               org_id: str | None) -> set[str]:
    """The organizations (all, or only ``org_id``) where ``column`` is ``value`` (lower-cased) in
    some row: sign-in finds who is meant before it knows the organization."""
    query = sa.select(table.c.organization_id).where(sa.func.lower(table.c[column]) == value)
    if org_id is not None:
        query = query.where(table.c.organization_id == org_id)
    return set(await session.scalars(query))


@functools.cache
def _user_with_linked_admin() -> sa.Select[User, Admin]:
    users, admins = orm.users, orm.admins
    linked = sa.and_(admins.c.organization_id == users.c.organization_id, admins.c.linked_user_id == users.c.id)
    return sa.select(User, Admin).select_from(users.outerjoin(admins, linked)).where(
        users.c.organization_id == sa.bindparam("org"), users.c.id == sa.bindparam("value"))


class Organizations:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, org: Organization) -> None:
        self.session.add(org)

    async def get(self, org_id: str) -> Organization | None:
        return await self.session.get(Organization, org_id)

    async def lock(self, org_id: str) -> None:
        """Takes the organization's row lock (a write lock on SQLite) until commit, so checks
        that count the organization's admins cannot interleave."""
        table = orm.organizations
        await self.session.execute(sa.update(table).where(table.c.id == org_id).values(name=table.c.name))


class Users:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, user: User) -> None:
        self.session.add(user)

    async def delete(self, user: User) -> None:
        await self.session.delete(user)

    async def get(self, org_id: str, user_id: str, *, for_update: bool = False) -> User | None:
        return await _one(self.session, User, org_id, "id", user_id, for_update=for_update)

    async def lock(self, org_id: str, user_id: str) -> None:
        table = orm.users
        await self.session.execute(sa.update(table).where(
            table.c.organization_id == org_id, table.c.id == user_id).values(id=table.c.id))

    async def get_with_linked_admin(self, org_id: str, user_id: str) -> tuple[User, Admin | None] | None:
        """The user and the admin identity linked to it, if any: one statement for the two reads
        that most commands on a user start with."""
        row = (await self.session.execute(_user_with_linked_admin(), {"org": org_id, "value": user_id})).one_or_none()
        return (row[0], row[1]) if row is not None else None

    async def by_email(self, org_id: str, email: str) -> User | None:
        return await _one(self.session, User, org_id, "email", normalise_email(email), lower=True)

    async def by_username(self, org_id: str, username: str) -> User | None:
        return await _one(self.session, User, org_id, "username", username.strip().lower(), lower=True)

    async def organizations_with_email(self, email: str, org_id: str | None) -> set[str]:
        return await _organizations_where(self.session, orm.users, "email", email, org_id)

    async def organizations_with_username(self, username: str, org_id: str | None) -> set[str]:
        return await _organizations_where(self.session, orm.users, "username", username, org_id)

    async def many(self, org_id: str, ids: list[str]) -> list[User]:
        query = sa.select(User).where(orm.users.c.organization_id == org_id, orm.users.c.id.in_(ids))
        return list(await self.session.scalars(query))

    async def page(self, org_id: str, *, email: str | None, limit: int, skip: int) -> tuple[list[User], int]:
        where = [orm.users.c.organization_id == org_id]
        if email:
            where.append(sa.func.lower(orm.users.c.email) == normalise_email(email))
        total = await self.session.scalar(sa.select(sa.func.count()).select_from(orm.users).where(*where))
        query = sa.select(User).where(*where).order_by(orm.users.c.created_at, orm.users.c.id)
        rows = await self.session.scalars(query.limit(limit).offset(skip))
        return list(rows), int(total or 0)


class Admins:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    def add(self, admin: Admin) -> None:
        self.session.add(admin)

    async def delete(self, admin: Admin) -> None:
        await self.session.delete(admin)

    async def get(self, org_id: str, admin_id: str) -> Admin | None:
        return await _one(self.session, Admin, org_id, "id", admin_id)

    async def by_email(self, org_id: str, email: str) -> Admin | None:
        return await _one(self.session, Admin, org_id, "email", normalise_email(email), lower=True)

    async def by_linked_user(self, org_id: str, user_id: str) -> Admin | None:
        return await _one(self.session, Admin, org_id, "linked_user_id", user_id)

    async def organizations_with_email(self, email: str, org_id: str | None) -> set[str]:
        return await _organizations_where(self.session, orm.admins, "email", email, org_id)

    async def linked_to(self, org_id: str, user_ids: list[str]) -> dict[str, Admin]:
        query = sa.select(Admin).where(
            orm.admins.c.organization_id == org_id, orm.admins.c.linked_user_id.in_(user_ids)
        )
        return {a.linked_user_id: a for a in await self.session.scalars(query) if a.linked_user_id}

    async def all(self, org_id: str) -> list[Admin]:
        query = sa.select(Admin).where(orm.admins.c.organization_id == org_id).order_by(orm.admins.c.created_at)
        return list(await self.session.scalars(query))

    async def users_matching_emails(self, org_id: str, emails: list[str]) -> dict[str, str]:
        """email (normalised) -> user id, for the seed's "matching user" tooltip."""
        lowered = [normalise_email(e) for e in emails]
        query = sa.select(sa.func.lower(orm.users.c.email), orm.users.c.id).where(
            orm.users.c.organization_id == org_id, sa.func.lower(orm.users.c.email).in_(lowered)
        )
        return {email: user_id for email, user_id in await self.session.execute(query)}

    async def other_capable_billing_admins(self, org_id: str, excluding_admin_id: str, at: datetime, *,
                                           with_api_access: bool = False) -> int:
        """Administrators with Billing other than ``excluding_admin_id`` that can still sign in
        (and, ``with_api_access``, use the management API)."""
        a, u = orm.admins, orm.users
        user_can_sign_in = sa.and_(
            u.c.state == UserState.ACTIVATED.value,
            u.c.account_locked.is_(False),
            u.c.password_hash.is_not(None),
            sa.or_(u.c.password_expires_at.is_(None), u.c.password_expires_at > at),
        )
        query = (
            sa.select(sa.func.count())
            .select_from(a.outerjoin(u, u.c.id == a.c.linked_user_id))
            .where(
                a.c.organization_id == org_id,
                a.c.role == Role.BILLING.value,
                a.c.id != excluding_admin_id,
                sa.or_(
                    sa.and_(a.c.linked_user_id.is_(None), sa.or_(a.c.password_hash.is_not(None), a.c.federated)),
                    sa.and_(a.c.linked_user_id.is_not(None), user_can_sign_in),
                ),
            )
        )
        if with_api_access:
            query = query.where(a.c.api_access.is_(True))
        return int(await self.session.scalar(query) or 0)


class _Rows:
    """Plain-table access for the named repositories of tables without a domain class."""

    table: sa.Table

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def _insert(self, **values: Any) -> str:
        values.setdefault("id", new_id())
        if "created_at" in self.table.c:
            values.setdefault("created_at", now())
        with conflicts_translated():  # a unique value already stored: a concurrent request's, often
            await self.session.execute(sa.insert(self.table).values(**values))
        return str(values["id"])

    async def _find(self, org_id: str, **where: Any) -> list[sa.Row[Any]]:
        clauses = [self.table.c.organization_id == org_id] + [self.table.c[k] == v for k, v in where.items()]
        order = self.table.c.created_at if "created_at" in self.table.c else self.table.c.id
        result = await self.session.execute(sa.select(self.table).where(*clauses).order_by(order))
        return list(result)

    async def _first(self, org_id: str, **where: Any) -> sa.Row[Any] | None:
        rows = await self._find(org_id, **where)
        return rows[0] if rows else None

    async def _update(self, org_id: str, row_id: str, **values: Any) -> None:
        await self.session.execute(
            sa.update(self.table)
            .where(self.table.c.organization_id == org_id, self.table.c.id == row_id)
            .values(**values)
        )

    async def _delete(self, org_id: str, **where: Any) -> int:
        clauses = [self.table.c.organization_id == org_id] + [self.table.c[k] == v for k, v in where.items()]
        result = await self.session.execute(sa.delete(self.table).where(*clauses))
        return int(result.rowcount or 0)  # type: ignore[attr-defined]


class TotpCredentials(_Rows):
    table = orm.totp_credentials

    def __init__(self, session: AsyncSession, box: SecretBox) -> None:
        super().__init__(session)
        self.box = box

    async def add(self, org_id: str, user_id: str, secret_encrypted: str, last_used_step: int) -> str:
        return await self._insert(organization_id=org_id, user_id=user_id, secret_encrypted=secret_encrypted,
                                  last_used_step=last_used_step)

    async def exists(self, org_id: str, user_id: str) -> bool:
        return await self._first(org_id, user_id=user_id) is not None

    async def delete_of_user(self, org_id: str, user_id: str) -> int:
        return await self._delete(org_id, user_id=user_id)

    async def accept_user_code(self, org_id: str, user_id: str, code: str) -> bool:
        return await totp.accept_user_code(self.session, self.box, org_id, user_id, code)

    async def accept_admin_code(self, org_id: str, admin_id: str, code: str) -> bool:
        return await totp.accept_admin_code(self.session, self.box, org_id, admin_id, code)


class WebauthnCredentials(_Rows):
    table = orm.webauthn_credentials

    async def add(self, org_id: str, user_id: str, **values: Any) -> str:
        return await self._insert(organization_id=org_id, user_id=user_id, **values)

    async def registered(self, credential_id: str) -> bool:
        query = sa.select(sa.exists().where(self.table.c.credential_id == credential_id))
        return bool(await self.session.scalar(query))

    async def of_user(self, org_id: str, user_id: str, credential_id: str, attachment: str) -> Any | None:
        return await self._first(org_id, user_id=user_id, credential_id=credential_id, attachment=attachment)

    async def all_of_user(self, org_id: str, user_id: str, attachment: str | None = None) -> list[Any]:
        """The user's credentials (of this attachment), oldest first."""
        if attachment is None:
            return await self._find(org_id, user_id=user_id)
        return await self._find(org_id, user_id=user_id, attachment=attachment)

    async def owner(self, credential_id: str, attachment: str) -> tuple[str, str] | None:
        """(organization id, user id) of a credential found by its id alone: the one lookup not
        scoped to an organization, for passwordless sign-in, where the credential names it."""
        table = self.table
        row = (await self.session.execute(sa.select(table.c.organization_id, table.c.user_id).where(
            table.c.credential_id == credential_id, table.c.attachment == attachment))).one_or_none()
        return (row.organization_id, row.user_id) if row else None

    async def advance_sign_count(self, org_id: str, row_id: str, seen: int, new: int) -> bool:
        table = self.table
        moved = await self.session.execute(
            sa.update(table).where(table.c.organization_id == org_id, table.c.id == row_id,
                                   table.c.sign_count == seen)
            .values(sign_count=new, last_used_at=now()))
        return int(moved.rowcount or 0) == 1  # type: ignore[attr-defined]

    async def delete(self, org_id: str, user_id: str, row_id: str) -> bool:
        return bool(await self._delete(org_id, id=row_id, user_id=user_id))


class PushDevices(_Rows):
    table = orm.push_devices

    async def add(self, org_id: str, user_id: str, name: str, algorithm: str, public_key: str) -> str:
        return await self._insert(organization_id=org_id, user_id=user_id, name=name, algorithm=algorithm,
                                  public_key=public_key)

    async def get(self, org_id: str, device_id: str, user_id: str | None = None) -> Any | None:
        """The device (of this user, if given)."""
        if user_id is None:
            return await self._first(org_id, id=device_id)
        return await self._first(org_id, id=device_id, user_id=user_id)

    async def all_of_user(self, org_id: str, user_id: str) -> list[Any]:
        return await self._find(org_id, user_id=user_id)

    async def delete(self, org_id: str, user_id: str, row_id: str) -> bool:
        return bool(await self._delete(org_id, id=row_id, user_id=user_id))


class DuoEnrollments(_Rows):
    table = orm.duo_enrollments

    async def add(self, org_id: str, user_id: str, duo_username: str) -> str:
        return await self._insert(organization_id=org_id, user_id=user_id, duo_username=duo_username)

    async def username(self, org_id: str, user_id: str) -> str | None:
        table = self.table
        return await self.session.scalar(sa.select(table.c.duo_username).where(
            table.c.organization_id == org_id, table.c.user_id == user_id))


class DuoSettings:
    """An organization's Duo application (one row per organization)."""

    table = orm.duo_configs

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, org_id: str) -> Any | None:
        query = sa.select(self.table).where(self.table.c.organization_id == org_id)
        return (await self.session.execute(query)).one_or_none()

    async def put(self, org_id: str, client_id: str, client_secret_encrypted: str, api_host: str) -> None:
        values = {"client_id": client_id, "client_secret_encrypted": client_secret_encrypted, "api_host": api_host}
        where = self.table.c.organization_id == org_id
        if await self.get(org_id) is not None:
            await self.session.execute(sa.update(self.table).where(where).values(**values, updated_at=now()))
        else:
            await self.session.execute(
                sa.insert(self.table).values(organization_id=org_id, created_at=now(), **values))

    async def delete(self, org_id: str) -> None:
        await self.session.execute(sa.delete(self.table).where(self.table.c.organization_id == org_id))


class ApiKeys(_Rows):
    table = orm.api_keys

    async def add(self, org_id: str, admin_id: str, prefix: str, key_hash: str,
                  expires_at: datetime | None = None) -> str:
        return await self._insert(organization_id=org_id, admin_id=admin_id, prefix=prefix, key_hash=key_hash,
                                  expires_at=expires_at)

    async def delete_of_admin(self, org_id: str, admin_id: str) -> int:
        return await self._delete(org_id, admin_id=admin_id)


class SshKeys(_Rows):
    table = orm.ssh_keys

    async def add(self, org_id: str, user_id: str, name: str, public_key: str, fingerprint: str) -> str:
        return await self._insert(organization_id=org_id, user_id=user_id, name=name, public_key=public_key,
                                  fingerprint=fingerprint)

    async def of_user(self, org_id: str, user_id: str) -> list[Any]:
        return await self._find(org_id, user_id=user_id)

    async def delete(self, org_id: str, user_id: str, row_id: str) -> bool:
        return bool(await self._delete(org_id, id=row_id, user_id=user_id))


class Integrations(_Rows):
    table = orm.integrations

    async def get(self, org_id: str, integration_id: str) -> Any | None:
        return await self._first(org_id, id=integration_id)

    async def name_taken(self, org_id: str, name: str) -> bool:
        return await self._first(org_id, name=name) is not None

    async def add(self, org_id: str, **values: Any) -> str:
        return await self._insert(organization_id=org_id, **values)

    async def update(self, org_id: str, integration_id: str, **values: Any) -> None:
        await self._update(org_id, integration_id, **values)

    async def delete(self, org_id: str, integration_id: str) -> None:
        await self._delete(org_id, id=integration_id)

    async def all(self, org_id: str) -> list[Any]:
        return await self._find(org_id)


class Outbox(_Rows):
    table = orm.mail_outbox

    async def add(self, org_id: str, recipient: str, subject: str, body: str) -> str:
        return await self._insert(organization_id=org_id, recipient=recipient, subject=subject, body=body,
                                  status="pending")

    async def recent(self, org_id: str, limit: int) -> list[sa.Row[Any]]:
        result = await self.session.execute(
            sa.select(self.table).where(self.table.c.organization_id == org_id)
            .order_by(self.table.c.created_at.desc()).limit(limit)
        )
        return list(result)


async def enrolled_factors(session: AsyncSession, org_id: str, user_id: str) -> list[str]:
    """The user's MFA factors, by the names the API shows: totp, webauthn_device, security_key,
    push, duo."""
    factors: list[str] = []
    scoped = {"organization_id": org_id, "user_id": user_id}

    async def exists(table: sa.Table, *extra: sa.ColumnElement[bool]) -> bool:
        clauses = [table.c[k] == v for k, v in scoped.items()] + list(extra)
        return bool(await session.scalar(sa.select(sa.exists().where(*clauses))))

    if await exists(orm.totp_credentials):
        factors.append("totp")
    if await exists(orm.webauthn_credentials, orm.webauthn_credentials.c.attachment == "platform"):
        factors.append("webauthn_device")
    if await exists(orm.webauthn_credentials, orm.webauthn_credentials.c.attachment != "platform"):
        factors.append("security_key")
    if await exists(orm.push_devices):
        factors.append("push")
    if await exists(orm.duo_enrollments):
        factors.append("duo")
    return factors


class Factors:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def enrolled(self, org_id: str, user_id: str) -> list[str]:
        return await enrolled_factors(self.session, org_id, user_id)


class ScimProfiles:
    """The SCIM attributes a provider wrote that adminlink keeps for it (one row per user)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.table = orm.scim_user_profiles

    async def get(self, org_id: str, user_id: str) -> sa.Row[Any] | None:
        query = sa.select(self.table).where(self.table.c.organization_id == org_id,
                                            self.table.c.user_id == user_id)
        return (await self.session.execute(query)).one_or_none()

    async def put(self, org_id: str, user_id: str, **values: Any) -> None:
        where = (self.table.c.organization_id == org_id, self.table.c.user_id == user_id)
        updated = await self.session.execute(sa.update(self.table).where(*where).values(**values))
        if not updated.rowcount:  # type: ignore[attr-defined]
            await self.session.execute(
                sa.insert(self.table).values(organization_id=org_id, user_id=user_id, **values))


class Groups:
    """SCIM groups and their members. Members are users of the same organization."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self.table = orm.groups
        self.members = orm.group_members

    async def get(self, org_id: str, group_id: str) -> sa.Row[Any] | None:
        query = sa.select(self.table).where(self.table.c.organization_id == org_id, self.table.c.id == group_id)
        return (await self.session.execute(query)).one_or_none()

    async def lock(self, org_id: str, group_id: str) -> None:
        """A write lock on the group's row until commit (a row lock on PostgreSQL, the database
        write lock on SQLite), so a version check and the change it guards cannot interleave."""
        await self.session.execute(sa.update(self.table).where(
            self.table.c.organization_id == org_id, self.table.c.id == group_id).values(version=self.table.c.version))

    async def named(self, org_id: str, display_name: str) -> sa.Row[Any] | None:
        query = sa.select(self.table).where(self.table.c.organization_id == org_id,
                                            sa.func.lower(self.table.c.display_name) == display_name.lower())
        return (await self.session.execute(query)).one_or_none()

    async def insert(self, org_id: str, display_name: str, external_id: str | None) -> str:
        group_id = new_id()
        await self.session.execute(sa.insert(self.table).values(
            id=group_id, organization_id=org_id, display_name=display_name, external_id=external_id,
            created_at=now(), updated_at=now()))
        return group_id

    async def update(self, org_id: str, group_id: str, **values: Any) -> None:
        await self.session.execute(sa.update(self.table).where(
            self.table.c.organization_id == org_id, self.table.c.id == group_id).values(
            updated_at=now(), version=self.table.c.version + 1, **values))

    async def delete(self, org_id: str, group_id: str) -> None:
        await self.session.execute(sa.delete(self.table).where(
            self.table.c.organization_id == org_id, self.table.c.id == group_id))

    async def member_ids(self, org_id: str, group_id: str) -> list[str]:
        query = sa.select(self.members.c.user_id).where(
            self.members.c.organization_id == org_id, self.members.c.group_id == group_id
        ).order_by(self.members.c.user_id)
        return list(await self.session.scalars(query))

    async def add_members(self, org_id: str, group_id: str, user_ids: list[str]) -> None:
        if user_ids:
            await self.session.execute(sa.insert(self.members), [
                {"organization_id": org_id, "group_id": group_id, "user_id": u} for u in user_ids])

    async def remove_members(self, org_id: str, group_id: str, user_ids: list[str]) -> None:
        if user_ids:
            await self.session.execute(sa.delete(self.members).where(
                self.members.c.organization_id == org_id, self.members.c.group_id == group_id,
                self.members.c.user_id.in_(user_ids)))

    async def of_users(self, org_id: str, user_ids: list[str]) -> dict[str, list[tuple[str, str]]]:
        """user id -> [(group id, display name)], for the users' read-only ``groups`` attribute."""
        m, g = self.members, self.table
        query = (sa.select(m.c.user_id, g.c.id, g.c.display_name)
                 .join(g, g.c.id == m.c.group_id)
                 .where(m.c.organization_id == org_id, m.c.user_id.in_(user_ids))
                 .order_by(g.c.id))
        found: dict[str, list[tuple[str, str]]] = {u: [] for u in user_ids}
        for user_id, group_id, name in await self.session.execute(query):
            found[user_id].append((group_id, name))
        return found

    async def existing_users(self, org_id: str, user_ids: list[str]) -> set[str]:
        """The ids among ``user_ids`` of users a SCIM provider can see (not hidden by a SCIM delete)."""
        u = orm.users
        found: set[str] = set()
        for start in range(0, len(user_ids), 500):
            chunk = user_ids[start:start + 500]
            found.update(await self.session.scalars(sa.select(u.c.id).where(
                u.c.organization_id == org_id, u.c.id.in_(chunk), u.c.scim_deleted_at.is_(None))))
        return found
