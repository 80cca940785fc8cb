"""What a handler sees of the database: a unit of work offering named repositories, and no session.

``service.adapters.unit_of_work`` implements it with SQLAlchemy (one transaction per command), a
batch unit of work implements it for many commands at once, and ``tests/fakes`` keeps it in
memory for handler unit tests. Handlers, views, sign-in flows and provisioning type against these
protocols only, so none of them can tell which one runs them.

Rows of the tables that have no domain class (credentials, keys, groups, integrations...) are
read-only records with attributes named as the table's columns.
"""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, Self

from service.domain.commands import Actor
from service.domain.events import Event
from service.domain.model import Admin, Organization, User
from service.ops.repository import JobRepository


class Sealer(Protocol):
    """Encrypts secrets before they are stored (the adapters' ``SecretBox``)."""

    def seal(self, text: str) -> str: ...

    def open(self, sealed: str) -> str: ...


class OrganizationRepository(Protocol):
    def add(self, org: Organization) -> None: ...

    async def get(self, org_id: str) -> Organization | None: ...

    async def lock(self, org_id: str) -> None:
        """Holds the organization's write lock until commit, so checks that count its admins
        cannot interleave."""


class UserRepository(Protocol):
    def add(self, user: User) -> None: ...

    async def delete(self, user: User) -> None: ...

    async def get(self, org_id: str, user_id: str, *, for_update: bool = False) -> User | None: ...

    async def get_with_linked_admin(self, org_id: str, user_id: str) -> tuple[User, Admin | None] | None: ...

    async def by_email(self, org_id: str, email: str) -> User | None: ...

    async def by_username(self, org_id: str, username: str) -> User | None: ...

    async def many(self, org_id: str, ids: list[str]) -> list[User]: ...

    async def page(self, org_id: str, *, email: str | None, limit: int, skip: int) -> tuple[list[User], int]: ...

    async def lock(self, org_id: str, user_id: str) -> None:
        """Holds the user's write lock until commit, taken before reading it, so a version check
        and the change it guards cannot interleave with another writer."""

    async def organizations_with_email(self, email: str, org_id: str | None) -> set[str]:
        """The organizations (all, or only ``org_id``) with a user of this email: sign-in finds
        who is meant before it knows the organization."""
        ...

    async def organizations_with_username(self, username: str, org_id: str | None) -> set[str]: ...


class AdminRepository(Protocol):
    def add(self, admin: Admin) -> None: ...

    async def delete(self, admin: Admin) -> None: ...

    async def get(self, org_id: str, admin_id: str) -> Admin | None: ...

    async def by_email(self, org_id: str, email: str) -> Admin | None: ...

    async def by_linked_user(self, org_id: str, user_id: str) -> Admin | None: ...

    async def linked_to(self, org_id: str, user_ids: list[str]) -> dict[str, Admin]: ...

    async def all(self, org_id: str) -> list[Admin]: ...

    async def users_matching_emails(self, org_id: str, emails: list[str]) -> dict[str, str]: ...

    async def other_capable_billing_admins(self, org_id: str, excluding_admin_id: str, at: datetime, *,
                                           with_api_access: bool = False) -> int: ...

    async def organizations_with_email(self, email: str, org_id: str | None) -> set[str]: ...


class FactorRepository(Protocol):
    async def enrolled(self, org_id: str, user_id: str) -> list[str]:
        """The user's MFA factors by the names the API shows: totp, webauthn_device,
        security_key, push, duo."""
        ...


class TotpCredentialRepository(Protocol):
    async def add(self, org_id: str, user_id: str, secret_encrypted: str, last_used_step: int) -> str: ...

    async def exists(self, org_id: str, user_id: str) -> bool: ...

    async def delete_of_user(self, org_id: str, user_id: str) -> int: ...

    async def accept_user_code(self, org_id: str, user_id: str, code: str) -> bool:
        """Whether ``code`` is the user's current TOTP code, not used before (it is spent)."""
        ...

    async def accept_admin_code(self, org_id: str, admin_id: str, code: str) -> bool:
        """A classic (unlinked) admin's own TOTP code; a linked admin has none."""
        ...


class WebauthnCredentialRepository(Protocol):
    async def add(self, org_id: str, user_id: str, **values: Any) -> str: ...

    async def registered(self, credential_id: str) -> bool:
        """Whether an authenticator with this credential id is registered, in any organization."""
        ...

    async def of_user(self, org_id: str, user_id: str, credential_id: str, attachment: str) -> Any | None: ...

    async def advance_sign_count(self, org_id: str, row_id: str, seen: int, new: int) -> bool:
        """Moves the sign count from ``seen`` to ``new``; False when someone moved it meanwhile."""
        ...

    async def delete(self, org_id: str, user_id: str, row_id: str) -> bool: ...

    async def all_of_user(self, org_id: str, user_id: str, attachment: str | None = None) -> list[Any]: ...

    async def owner(self, credential_id: str, attachment: str) -> tuple[str, str] | None:
        """The organization and user of a credential, in any organization: its id names them (Go)."""
        ...


class PushDeviceRepository(Protocol):
    async def add(self, org_id: str, user_id: str, name: str, algorithm: str, public_key: str) -> str: ...

    async def delete(self, org_id: str, user_id: str, row_id: str) -> bool: ...

    async def get(self, org_id: str, device_id: str, user_id: str | None = None) -> Any | None: ...

    async def all_of_user(self, org_id: str, user_id: str) -> list[Any]: ...


class DuoEnrollmentRepository(Protocol):
    async def add(self, org_id: str, user_id: str, duo_username: str) -> str: ...

    async def username(self, org_id: str, user_id: str) -> str | None: ...


class DuoSettingsRepository(Protocol):
    async def get(self, org_id: str) -> Any | None: ...

    async def put(self, org_id: str, client_id: str, client_secret_encrypted: str, api_host: str) -> None: ...

    async def delete(self, org_id: str) -> None: ...


class ApiKeyRepository(Protocol):
    async def add(self, org_id: str, admin_id: str, prefix: str, key_hash: str,
                  expires_at: datetime | None = None) -> str: ...

    async def delete_of_admin(self, org_id: str, admin_id: str) -> int: ...


class SshKeyRepository(Protocol):
    async def add(self, org_id: str, user_id: str, name: str, public_key: str, fingerprint: str) -> str: ...

    async def of_user(self, org_id: str, user_id: str) -> list[Any]: ...

    async def delete(self, org_id: str, user_id: str, row_id: str) -> bool: ...


class IntegrationRepository(Protocol):
    async def get(self, org_id: str, integration_id: str) -> Any | None: ...

    async def name_taken(self, org_id: str, name: str) -> bool: ...

    async def add(self, org_id: str, **values: Any) -> str: ...

    async def update(self, org_id: str, integration_id: str, **values: Any) -> None: ...

    async def delete(self, org_id: str, integration_id: str) -> None: ...

    async def all(self, org_id: str) -> list[Any]: ...


class ScimProfileRepository(Protocol):
    async def get(self, org_id: str, user_id: str) -> Any | None: ...

    async def put(self, org_id: str, user_id: str, **values: Any) -> None: ...


class GroupRepository(Protocol):
    async def get(self, org_id: str, group_id: str) -> Any | None: ...

    async def lock(self, org_id: str, group_id: str) -> None: ...

    async def named(self, org_id: str, display_name: str) -> Any | None: ...

    async def insert(self, org_id: str, display_name: str, external_id: str | None) -> str: ...

    async def update(self, org_id: str, group_id: str, **values: Any) -> None: ...

    async def delete(self, org_id: str, group_id: str) -> None: ...

    async def member_ids(self, org_id: str, group_id: str) -> list[str]: ...

    async def add_members(self, org_id: str, group_id: str, user_ids: list[str]) -> None: ...

    async def remove_members(self, org_id: str, group_id: str, user_ids: list[str]) -> None: ...

    async def of_users(self, org_id: str, user_ids: list[str]) -> dict[str, list[tuple[str, str]]]: ...

    async def existing_users(self, org_id: str, user_ids: list[str]) -> set[str]: ...


class OutboxRepository(Protocol):
    async def add(self, org_id: str, recipient: str, subject: str, body: str) -> str:
        """A pending email; its ``send_email`` job delivers it."""
        ...

    async def recent(self, org_id: str, limit: int) -> list[Any]:
        """The organization's latest emails, newest first."""
        ...


class ReadOnlyUnitOfWork(Protocol):
    """Reads outside any command (who signs in, their factors and credentials, what a page
    shows): one short transaction and nothing to commit; what it loaded stays readable after.
    A command's unit of work offers the same repositories, and more."""

    @property
    def users(self) -> UserRepository: ...

    @property
    def admins(self) -> AdminRepository: ...

    @property
    def factors(self) -> FactorRepository: ...

    @property
    def webauthn(self) -> WebauthnCredentialRepository: ...

    @property
    def push_devices(self) -> PushDeviceRepository: ...

    @property
    def duo(self) -> DuoEnrollmentRepository: ...

    @property
    def duo_settings(self) -> DuoSettingsRepository: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None: ...


class UnitOfWork(ReadOnlyUnitOfWork, Protocol):
    """One command's work: what it changes, records and enqueues commits together or not at all."""

    actor: Actor  # sign-in flows name the actor once they know who signs in

    @property
    def box(self) -> Sealer: ...

    @property
    def organizations(self) -> OrganizationRepository: ...

    @property
    def totp(self) -> TotpCredentialRepository: ...

    @property
    def api_keys(self) -> ApiKeyRepository: ...

    @property
    def ssh_keys(self) -> SshKeyRepository: ...

    @property
    def integrations(self) -> IntegrationRepository: ...

    @property
    def scim_profiles(self) -> ScimProfileRepository: ...

    @property
    def groups(self) -> GroupRepository: ...

    @property
    def outbox(self) -> OutboxRepository: ...

    @property
    def jobs(self) -> JobRepository: ...

    def collect(self, *events: Event) -> None:
        """Events of this command: written (records, emails) and acted on (jobs, ended sessions) at commit."""

    async def add_job(self, function: str, args: dict[str, str], idempotency_key: str | None = None) -> str:
        """A job row in this transaction; the queue gets it after commit."""
        ...

    async def flush(self) -> None:
        """Sends the pending changes (so that rows referring to them can follow, and unique
        constraints speak now), without committing."""

    async def commit(self) -> None: ...
