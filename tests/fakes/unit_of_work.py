"""An in-memory unit of work for handler unit tests: the repositories of
``service.unit_of_work.UnitOfWork`` over dicts and lists, no database, no queue.

``commit`` keeps what the handler collected in ``committed`` and the jobs it added in ``jobs``;
a handler that raises leaves both as they were, so a test sees what would have been committed.
Rows of tables without a domain class are ``SimpleNamespace`` records, as the SQLAlchemy rows
they stand for have attributes named as their columns."""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace, TracebackType
from typing import Any

from service.domain.commands import Actor
from service.domain.events import Event
from service.domain.model import Admin, Organization, Role, User, UserState, new_id, normalise_email, now


class FakeBox:
    def seal(self, text: str) -> str:
        return "sealed:" + text

    def open(self, sealed: str) -> str:
        return sealed.removeprefix("sealed:")


class FakeOrganizations:
    def __init__(self) -> None:
        self.rows: dict[str, Organization] = {}

    def add(self, org: Organization) -> None:
        self.rows[org.id] = org

    async def get(self, org_id: str) -> Organization | None:
        return self.rows.get(org_id)

    async def lock(self, org_id: str) -> None:
        return None


class FakeUsers:
    def __init__(self, admins: FakeAdmins) -> None:
        self.rows: dict[str, User] = {}
        self._admins = admins

    def add(self, user: User) -> None:
        self.rows[user.id] = user

    async def delete(self, user: User) -> None:
        del self.rows[user.id]

    async def get(self, org_id: str, user_id: str, *, for_update: bool = False) -> User | None:
        user = self.rows.get(user_id)
        return user if user is not None and user.organization_id == org_id else None

    async def get_with_linked_admin(self, org_id: str, user_id: str) -> tuple[User, Admin | None] | None:
        user = await self.get(org_id, user_id)
        return None if user is None else (user, await self._admins.by_linked_user(org_id, user_id))

    async def by_email(self, org_id: str, email: str) -> User | None:
        return next((u for u in self._of(org_id) if u.email_key == normalise_email(email)), None)

    async def by_username(self, org_id: str, username: str) -> User | None:
        wanted = username.strip().lower()
        return next((u for u in self._of(org_id) if u.username.lower() == wanted), None)

    async def many(self, org_id: str, ids: list[str]) -> list[User]:
        return [u for u in self._of(org_id) if u.id in ids]

    async def page(self, org_id: str, *, email: str | None, limit: int, skip: int) -> tuple[list[User], int]:
        found = [u for u in self._of(org_id) if not email or u.email_key == normalise_email(email)]
        return found[skip:skip + limit], len(found)

    async def lock(self, org_id: str, user_id: str) -> None:
        return None

    def _of(self, org_id: str) -> list[User]:
        return [u for u in self.rows.values() if u.organization_id == org_id]


class FakeAdmins:
    def __init__(self) -> None:
        self.rows: dict[str, Admin] = {}
        self.users: FakeUsers | None = None

    def add(self, admin: Admin) -> None:
        self.rows[admin.id] = admin

    async def delete(self, admin: Admin) -> None:
        del self.rows[admin.id]

    async def get(self, org_id: str, admin_id: str) -> Admin | None:
        admin = self.rows.get(admin_id)
        return admin if admin is not None and admin.organization_id == org_id else None

    async def by_email(self, org_id: str, email: str) -> Admin | None:
        return next((a for a in await self.all(org_id) if a.email_key == normalise_email(email)), None)

    async def by_linked_user(self, org_id: str, user_id: str) -> Admin | None:
        return next((a for a in await self.all(org_id) if a.linked_user_id == user_id), None)

    async def linked_to(self, org_id: str, user_ids: list[str]) -> dict[str, Admin]:
        return {a.linked_user_id: a for a in await self.all(org_id) if a.linked_user_id in user_ids}

    async def all(self, org_id: str) -> list[Admin]:
        return sorted((a for a in self.rows.values() if a.organization_id == org_id), key=lambda a: a.created_at)

    async def users_matching_emails(self, org_id: str, emails: list[str]) -> dict[str, str]:
        assert self.users is not None
        wanted = {normalise_email(e) for e in emails}
        return {u.email_key: u.id for u in self.users.rows.values()
                if u.organization_id == org_id and u.email_key in wanted}

    async def other_capable_billing_admins(self, org_id: str, excluding_admin_id: str, at: datetime, *,
                                           with_api_access: bool = False) -> int:
        assert self.users is not None
        return sum(
            1 for a in await self.all(org_id)
            if a.role == Role.BILLING and a.id != excluding_admin_id and (a.api_access or not with_api_access)
            and a.can_sign_in(self.users.rows.get(a.linked_user_id or ""))
        )


class FakeRows:
    """One table without a domain class: records with an id, an organization and a user or admin."""

    def __init__(self) -> None:
        self.rows: list[SimpleNamespace] = []

    async def _insert(self, org_id: str, **values: Any) -> str:
        row = SimpleNamespace(id=new_id(), organization_id=org_id, created_at=now(), **values)
        self.rows.append(row)
        return str(row.id)

    def _find(self, org_id: str, **where: Any) -> list[SimpleNamespace]:
        return [r for r in self.rows if r.organization_id == org_id
                and all(getattr(r, k, None) == v for k, v in where.items())]

    def _delete(self, org_id: str, **where: Any) -> int:
        gone = self._find(org_id, **where)
        self.rows = [r for r in self.rows if r not in gone]
        return len(gone)

    async def delete(self, org_id: str, user_id: str, row_id: str) -> bool:
        return bool(self._delete(org_id, id=row_id, user_id=user_id))


class FakeTotp(FakeRows):
    async def add(self, org_id: str, user_id: str, secret_encrypted: str, last_used_step: int) -> str:
        return await self._insert(org_id, user_id=user_id, secret_encrypted=secret_encrypted,
                                  last_used_step=last_used_step)

    async def exists(self, org_id: str, user_id: str) -> bool:
        return bool(self._find(org_id, user_id=user_id))

    async def delete_of_user(self, org_id: str, user_id: str) -> int:
        return self._delete(org_id, user_id=user_id)

    async def accept_user_code(self, org_id: str, user_id: str, code: str) -> bool:
        raise NotImplementedError("TOTP codes are checked against the database in the service tests")

    async def accept_admin_code(self, org_id: str, admin_id: str, code: str) -> bool:
        raise NotImplementedError("TOTP codes are checked against the database in the service tests")


class FakeWebauthn(FakeRows):
    async def add(self, org_id: str, user_id: str, **values: Any) -> str:
        return await self._insert(org_id, user_id=user_id, **values)

    async def registered(self, credential_id: str) -> bool:
        return any(r.credential_id == credential_id for r in self.rows)

    async def of_user(self, org_id: str, user_id: str, credential_id: str, attachment: str) -> Any | None:
        found = self._find(org_id, user_id=user_id, credential_id=credential_id, attachment=attachment)
        return found[0] if found else None

    async def advance_sign_count(self, org_id: str, row_id: str, seen: int, new: int) -> bool:
        found = self._find(org_id, id=row_id, sign_count=seen)
        for row in found:
            row.sign_count = new
        return bool(found)


class FakePushDevices(FakeRows):
    async def add(self, org_id: str, user_id: str, name: str, algorithm: str, public_key: str) -> str:
        return await self._insert(org_id, user_id=user_id, name=name, algorithm=algorithm, public_key=public_key)


class FakeDuoEnrollments(FakeRows):
    async def add(self, org_id: str, user_id: str, duo_username: str) -> str:
        return await self._insert(org_id, user_id=user_id, duo_username=duo_username)

    async def username(self, org_id: str, user_id: str) -> str | None:
        found = self._find(org_id, user_id=user_id)
        return found[0].duo_username if found else None


class FakeDuoSettings:
    def __init__(self) -> None:
        self.rows: dict[str, SimpleNamespace] = {}

    async def get(self, org_id: str) -> Any | None:
        return self.rows.get(org_id)

    async def put(self, org_id: str, client_id: str, client_secret_encrypted: str, api_host: str) -> None:
        self.rows[org_id] = SimpleNamespace(client_id=client_id, client_secret_encrypted=client_secret_encrypted,
                                            api_host=api_host, created_at=now(), updated_at=now())

    async def delete(self, org_id: str) -> None:
        self.rows.pop(org_id, None)


class FakeApiKeys(FakeRows):
    async def add(self, org_id: str, admin_id: str, prefix: str, key_hash: str,
                  expires_at: datetime | None = None) -> str:
        return await self._insert(org_id, admin_id=admin_id, prefix=prefix, key_hash=key_hash, expires_at=expires_at)

    async def delete_of_admin(self, org_id: str, admin_id: str) -> int:
        return self._delete(org_id, admin_id=admin_id)


class FakeSshKeys(FakeRows):
    async def add(self, org_id: str, user_id: str, name: str, public_key: str, fingerprint: str) -> str:
        return await self._insert(org_id, user_id=user_id, name=name, public_key=public_key, fingerprint=fingerprint)

    async def of_user(self, org_id: str, user_id: str) -> list[Any]:
        return self._find(org_id, user_id=user_id)


class FakeFactors:
    def __init__(self, uow: FakeUnitOfWork) -> None:
        self._uow = uow

    async def enrolled(self, org_id: str, user_id: str) -> list[str]:
        uow, mine = self._uow, {"user_id": user_id}
        attachments = [r.attachment for r in uow.webauthn._find(org_id, **mine)]
        present = {
            "totp": bool(uow.totp._find(org_id, **mine)),
            "webauthn_device": "platform" in attachments,
            "security_key": any(a != "platform" for a in attachments),
            "push": bool(uow.push_devices._find(org_id, **mine)),
            "duo": bool(uow.duo._find(org_id, **mine)),
        }
        return [name for name, enrolled in present.items() if enrolled]


class FakeOutbox(FakeRows):
    async def add(self, org_id: str, recipient: str, subject: str, body: str) -> str:
        return await self._insert(org_id, recipient=recipient, subject=subject, body=body, status="pending")

    async def recent(self, org_id: str, limit: int) -> list[SimpleNamespace]:
        return sorted(self._find(org_id), key=lambda r: r.created_at, reverse=True)[:limit]


class FakeUnitOfWork:
    """Integrations, SCIM profiles and groups are not faked: their handlers are tested in the
    service tests."""

    def __init__(self, actor: Actor) -> None:
        self.actor = actor
        self.box = FakeBox()
        self.organizations = FakeOrganizations()
        self.admins = FakeAdmins()
        self.users = FakeUsers(self.admins)
        self.admins.users = self.users
        self.factors = FakeFactors(self)
        self.totp = FakeTotp()
        self.webauthn = FakeWebauthn()
        self.push_devices = FakePushDevices()
        self.duo = FakeDuoEnrollments()
        self.duo_settings = FakeDuoSettings()
        self.api_keys = FakeApiKeys()
        self.ssh_keys = FakeSshKeys()
        self.outbox = FakeOutbox()
        self.collected: list[Event] = []
        self.committed: list[Event] = []
        self.jobs: list[tuple[str, dict[str, str]]] = []
        self.commits = 0

    async def __aenter__(self) -> FakeUnitOfWork:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.collected = []

    def collect(self, *events: Event) -> None:
        self.collected.extend(events)

    async def add_job(self, function: str, args: dict[str, str], idempotency_key: str | None = None) -> str:
        self.jobs.append((function, args))
        return new_id()

    async def flush(self) -> None:
        return None

    async def commit(self) -> None:
        self.committed.extend(self.collected)
        self.collected = []
        self.commits += 1

    # --- arranging a test ------------------------------------------------------------------

    def given_user(self, email: str = "ada@example.com", *, state: UserState = UserState.ACTIVATED,
                   factors: tuple[str, ...] = ("totp",), password: bool = True) -> User:
        org_id = self.actor.organization_id
        user = User(org_id, email, email.split("@")[0], "Ada", "Lovelace", state=state,
                    password_hash="argon2-hash" if password else None)
        self.users.add(user)
        for factor in factors:
            if factor == "totp":
                self.totp.rows.append(SimpleNamespace(id=new_id(), organization_id=org_id, user_id=user.id))
            else:
                self.push_devices.rows.append(SimpleNamespace(id=new_id(), organization_id=org_id, user_id=user.id))
        return user

    def given_admin(self, email: str, role: Role = Role.ADMINISTRATOR, *, user: User | None = None,
                    api_access: bool = False) -> Admin:
        admin = Admin(self.actor.organization_id, email, role, api_access=api_access,
                      password_hash=None if user else "argon2-hash", linked_user_id=user.id if user else None)
        self.admins.add(admin)
        return admin
