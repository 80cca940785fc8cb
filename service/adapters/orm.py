"""Tables, and the mapping of the domain's plain classes onto them.

Every identity row carries its organization; repositories filter on it in every query.
Migrations (``service/adapters/migrations``) create exactly these tables on SQLite and PostgreSQL.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import registry

from service.domain.model import (
    Admin,
    MfaEnrollment,
    Organization,
    PasswordAuthority,
    Role,
    User,
    UserState,
    now,
)

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)
mapper_registry = registry(metadata=metadata)

TS = sa.DateTime(timezone=True)


def _enum(cls: type) -> sa.Enum:
    return sa.Enum(cls, values_callable=lambda e: [m.value for m in e], native_enum=False, length=40)


def _id(name: str = "id") -> sa.Column:
    return sa.Column(name, sa.String(32), primary_key=True)


def _org() -> sa.Column:
    return sa.Column(
        "organization_id", sa.String(32), sa.ForeignKey("organizations.id", ondelete="CASCADE"), nullable=False
    )


organizations = sa.Table(
    "organizations",
    metadata,
    _id(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_at", TS, nullable=False),
)

users = sa.Table(
    "users",
    metadata,
    _id(),
    _org(),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("username", sa.String(200), nullable=False),
    sa.Column("firstname", sa.String(200), nullable=False, server_default=""),
    sa.Column("lastname", sa.String(200), nullable=False, server_default=""),
    sa.Column("state", _enum(UserState), nullable=False),
    sa.Column("account_locked", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("failed_logins", sa.Integer, nullable=False, server_default="0"),
    sa.Column("password_hash", sa.String(200)),
    sa.Column("password_expires_at", TS),
    sa.Column("password_authority", _enum(PasswordAuthority), nullable=False),
    sa.Column("mfa_required", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("auth_epoch", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", TS, nullable=False),
    # SCIM: the provider's id, and when a provider "deleted" a user that was only suspended.
    sa.Column("external_id", sa.String(300)),
    sa.Column("scim_deleted_at", TS),
    sa.Column("updated_at", TS),
    sa.Index("ix_users_org_external_id", "organization_id", "external_id"),
)
# Emails and usernames are unique per organization, case-insensitively.
sa.Index("uq_users_org_email", users.c.organization_id, sa.func.lower(users.c.email), unique=True)
sa.Index("uq_users_org_username", users.c.organization_id, sa.func.lower(users.c.username), unique=True)

admins = sa.Table(
    "admins",
    metadata,
    _id(),
    _org(),
    sa.Column("email", sa.String(320), nullable=False),
    sa.Column("role", _enum(Role), nullable=False),
    sa.Column("api_access", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("federated", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("password_hash", sa.String(200)),
    sa.Column("totp_secret", sa.String(300)),
    sa.Column("linked_user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="RESTRICT"), unique=True),
    sa.Column("mfa_enrollment", _enum(MfaEnrollment), nullable=False),
    sa.Column("auth_epoch", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", TS, nullable=False),
    # The time step of the last TOTP code accepted from a classic admin: older or equal are replays.
    sa.Column("totp_last_used_step", sa.BigInteger),
)
sa.Index("uq_admins_org_email", admins.c.organization_id, sa.func.lower(admins.c.email), unique=True)


def _user_fk() -> sa.Column:
    return sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False)


totp_credentials = sa.Table(
    "totp_credentials",
    metadata,
    _id(),
    _org(),
    sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, unique=True),
    sa.Column("secret_encrypted", sa.String(300), nullable=False),
    sa.Column("last_used_step", sa.BigInteger),
    sa.Column("created_at", TS, nullable=False),
)

webauthn_credentials = sa.Table(
    "webauthn_credentials",
    metadata,
    _id(),
    _org(),
    _user_fk(),
    sa.Column("credential_id", sa.String(1400), nullable=False, unique=True),
    sa.Column("public_key", sa.LargeBinary, nullable=False),
    sa.Column("sign_count", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("transports", sa.JSON, nullable=False),
    sa.Column("aaguid", sa.String(36), nullable=False),
    sa.Column("attachment", sa.String(20), nullable=False),  # platform | cross-platform
    sa.Column("name", sa.String(200), nullable=False, server_default=""),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("last_used_at", TS),
    sa.Index("ix_webauthn_credentials_user", "organization_id", "user_id"),
)

push_devices = sa.Table(
    "push_devices",
    metadata,
    _id(),
    _org(),
    _user_fk(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("algorithm", sa.String(20), nullable=False),  # ES256 | EdDSA
    sa.Column("public_key", sa.Text, nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Index("ix_push_devices_user", "organization_id", "user_id"),
)

duo_enrollments = sa.Table(
    "duo_enrollments",
    metadata,
    _id(),
    _org(),
    sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False, unique=True),
    sa.Column("duo_username", sa.String(200), nullable=False),
    sa.Column("created_at", TS, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    _id(),
    _org(),
    sa.Column("admin_id", sa.String(32), sa.ForeignKey("admins.id", ondelete="CASCADE"), nullable=False),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("expires_at", TS),
    sa.Column("last_used_at", TS),
)

ssh_keys = sa.Table(
    "ssh_keys",
    metadata,
    _id(),
    _org(),
    _user_fk(),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("public_key", sa.Text, nullable=False),
    sa.Column("fingerprint", sa.String(100), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Index("ix_ssh_keys_user", "organization_id", "user_id"),
)

insights_events = sa.Table(
    "insights_events",
    metadata,
    _id(),
    sa.Column("organization_id", sa.String(32), nullable=False),  # outlives deleted organizations' rows
    sa.Column("event_type", sa.String(60), nullable=False),
    sa.Column("service", sa.String(30), nullable=False),
    sa.Column("timestamp", TS, nullable=False),
    sa.Column("success", sa.Boolean, nullable=False),
    # Indexed copies of the two fields the seed's admin-login filter uses.
    sa.Column("initiated_by_administrator", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("target_resource_type", sa.String(40)),
    sa.Column("body", sa.JSON, nullable=False),
    sa.Index("ix_insights_org_time", "organization_id", "timestamp"),
    sa.Index("ix_insights_org_type_time", "organization_id", "event_type", "timestamp"),
)

mail_outbox = sa.Table(
    "mail_outbox",
    metadata,
    _id(),
    _org(),
    sa.Column("recipient", sa.String(320), nullable=False),
    sa.Column("subject", sa.String(300), nullable=False),
    sa.Column("body", sa.Text, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),  # pending | sent | kept
    sa.Column("created_at", TS, nullable=False),
    sa.Column("sent_at", TS),
    sa.Index("ix_mail_outbox_org_time", "organization_id", "created_at"),
)

jobs = sa.Table(
    "jobs",
    metadata,
    _id(),
    sa.Column("organization_id", sa.String(32)),
    sa.Column("idempotency_key", sa.String(200), nullable=False, unique=True),
    sa.Column("function", sa.String(100), nullable=False),
    sa.Column("args", sa.JSON, nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("tries", sa.Integer, nullable=False, server_default="0"),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("enqueued_at", TS),
    sa.Column("started_at", TS),
    sa.Column("finished_at", TS),
    sa.Column("result", sa.JSON),
    sa.Column("error", sa.Text),
    sa.Column("defer_until", TS),
    sa.Index("ix_jobs_status_created", "status", "created_at"),
    sa.Index("ix_jobs_org_created", "organization_id", "created_at"),
)

# A stored answer is replayed this long (as Stripe does); a retry after it is a new request, and
# a cleanup job (workers/maintenance.py) deletes the row. ``response`` holds the answer sealed
# with the service's secret box: answers carry secrets shown once (API keys, tokens, TOTP seeds).
IDEMPOTENCY_KEY_LIFETIME = timedelta(hours=24)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("organization_id", sa.String(32), primary_key=True),
    sa.Column("key", sa.String(200), primary_key=True),
    sa.Column("request_fingerprint", sa.String(64), nullable=False),
    sa.Column("status_code", sa.Integer),
    sa.Column("response", sa.JSON),
    sa.Column("created_at", TS, nullable=False),
)


integrations = sa.Table(
    "integrations",
    metadata,
    _id(),
    _org(),
    sa.Column("kind", sa.String(20), nullable=False),  # scim | hr | directory
    sa.Column("provider", sa.String(40)),  # generic | bamboohr | personio | okta | entra | ...
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("role", _enum(Role), nullable=False),
    sa.Column("delete_mode", sa.String(20), nullable=False, server_default="suspend"),
    sa.Column("token_hash", sa.String(64), unique=True),  # SCIM bearer token (hash only)
    sa.Column("secret_encrypted", sa.String(500)),  # webhook signing secret (encrypted)
    sa.Column("previous_secret_encrypted", sa.String(500)),  # accepted until previous_secret_expires_at
    sa.Column("previous_secret_expires_at", TS),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("rotated_at", TS),
    sa.UniqueConstraint("organization_id", "name", name="uq_integrations_org_name"),
)

duo_configs = sa.Table(
    "duo_configs",
    metadata,
    sa.Column("organization_id", sa.String(32), sa.ForeignKey("organizations.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("client_id", sa.String(100), nullable=False),
    sa.Column("client_secret_encrypted", sa.String(500), nullable=False),
    sa.Column("api_host", sa.String(300), nullable=False),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS),
)

# The newest occurred_at applied per (user, attribute): an older event is stale, never applied.
attribute_versions = sa.Table(
    "attribute_versions",
    metadata,
    sa.Column("organization_id", sa.String(32), primary_key=True),
    sa.Column("user_id", sa.String(32), primary_key=True),
    sa.Column("attribute", sa.String(60), primary_key=True),
    sa.Column("occurred_at", TS, nullable=False),
    sa.Column("event_id", sa.String(200), nullable=False),
)

groups = sa.Table(
    "groups",
    metadata,
    _id(),
    _org(),
    sa.Column("display_name", sa.String(300), nullable=False),
    sa.Column("external_id", sa.String(300)),
    sa.Column("created_at", TS, nullable=False),
    sa.Column("updated_at", TS),
    sa.Column("version", sa.Integer, nullable=False, server_default="1"),
)

group_members = sa.Table(
    "group_members",
    metadata,
    sa.Column("group_id", sa.String(32), sa.ForeignKey("groups.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("organization_id", sa.String(32), nullable=False),
)


# Ops and audit (migration 0003_ops). The seed's admin-login filter, in timestamp order:
sa.Index("ix_insights_org_target_admin_time", insights_events.c.organization_id,
         insights_events.c.target_resource_type, insights_events.c.initiated_by_administrator,
         insights_events.c.timestamp, insights_events.c.id)
# Ops: jobs of one status, oldest first, and those finished in the last minutes.
sa.Index("ix_jobs_org_status_created", jobs.c.organization_id, jobs.c.status, jobs.c.created_at)
sa.Index("ix_jobs_org_status_finished", jobs.c.organization_id, jobs.c.status, jobs.c.finished_at)
# Webhook drains: an integration's waiting rows in claim order (migration 0006; PostgreSQL only).
sa.Index("ix_jobs_webhooks_waiting", jobs.c.organization_id, sa.text("(args ->> 'integration_id')"),
         jobs.c.created_at, jobs.c.id,
         postgresql_where=sa.text("status = 'queued' AND function = 'apply_webhook'")).ddl_if(dialect="postgresql")


# SCIM: the attributes a provider writes that adminlink keeps for it without acting on them
# (RFC 7643 core and enterprise attributes beyond the user's own columns), so the provider reads
# back what it wrote. display_name and email_type are columns because filters reach them.
scim_user_profiles = sa.Table(
    "scim_user_profiles",
    metadata,
    sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True),
    sa.Column("organization_id", sa.String(32), nullable=False),
    sa.Column("display_name", sa.String(300)),
    sa.Column("email_type", sa.String(40)),
    sa.Column("attributes", sa.JSON, nullable=False),
)
# Stable, index-backed SCIM paging and lookups (userName and email use the unique indexes above).
sa.Index("ix_users_org_created_id", users.c.organization_id, users.c.created_at, users.c.id)
sa.Index("uq_groups_org_display_name", groups.c.organization_id, sa.func.lower(groups.c.display_name),
         unique=True)
sa.Index("ix_groups_org_external_id", groups.c.organization_id, groups.c.external_id)
sa.Index("ix_groups_org_created_id", groups.c.organization_id, groups.c.created_at, groups.c.id)
sa.Index("ix_group_members_org_user", group_members.c.organization_id, group_members.c.user_id)


# Webhooks (migration 0003_webhooks). An HR system's employee id, learned from an event that
# names it together with the user's email or external id, so later events (an email change
# above all) find the user by the HR system's own id.
employee_links = sa.Table(
    "employee_links",
    metadata,
    sa.Column("organization_id", sa.String(32), primary_key=True),
    sa.Column("integration_id", sa.String(32), sa.ForeignKey("integrations.id", ondelete="CASCADE"),
              primary_key=True),
    sa.Column("employee_id", sa.String(200), primary_key=True),
    sa.Column("user_id", sa.String(32), sa.ForeignKey("users.id", ondelete="CASCADE"), nullable=False),
    sa.Column("created_at", TS, nullable=False),
)

# What became of each event of a webhook job, written in the transaction that applied (or
# refused) it: a job run again after a crash skips what is already done.
webhook_event_outcomes = sa.Table(
    "webhook_event_outcomes",
    metadata,
    sa.Column("job_id", sa.String(32), primary_key=True),
    sa.Column("seq", sa.Integer, primary_key=True),
    sa.Column("organization_id", sa.String(32), nullable=False),
    sa.Column("outcome", sa.String(20), nullable=False),  # applied | unchanged | denied
    sa.Column("recorded_at", TS, nullable=False),
)


# The user's columns that SCIM shows (``provisioning.user_version`` digests them too).
_SHOWN_COLUMNS = ("username", "email", "firstname", "lastname", "state", "external_id")


def _touch_user(mapper: Any, connection: Any, target: User) -> None:
    """Moves ``users.updated_at`` (SCIM ``meta.lastModified``) when a shown column changes,
    whichever entrypoint changed it."""
    state = sa.inspect(target)
    if any(state.attrs[name].history.has_changes() for name in _SHOWN_COLUMNS):
        target.updated_at = now()


def start_mappers() -> None:
    """Map the domain classes onto their tables (once per process)."""
    if mapper_registry.mappers:
        return
    mapper_registry.map_imperatively(Organization, organizations)
    mapper_registry.map_imperatively(User, users)
    mapper_registry.map_imperatively(Admin, admins)
    sa.event.listen(User, "before_update", _touch_user)
