"""Inbound webhook events: recorded and enqueued on receipt, applied by a job.

Receiving (``service.intake``, with the helpers here): the delivery becomes one row of the jobs
table, keyed by its idempotency key, in one transaction with the employee-id links it teaches;
then arq gets the row's id. A delivery seen before answers the same job. If the database or Redis
cannot take it, the caller answers 503 (``Unavailable``); a committed row that arq never got is
enqueued by the reconciler.

Applying (``apply``): each event becomes a command for the message bus, run with the
integration as its actor, so the same handlers and permission checks decide. Around each
command, in the command's own transaction:

- the attribute's clock (``attribute_versions``: user, attribute, newest occurred_at) is locked;
  an event older than it is ``stale`` and changes nothing;
- the event's outcome is written (``webhook_event_outcomes``) with the change it made, so a job
  run again after a crash skips what it already did: no second change, record or email.

A refusal that the bus records (a permission denial) gets its outcome in the transaction that
records it, for the same reason.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import SQLAlchemyError

from service.adapters import orm
from service.adapters.jobs import ClaimedJob, JobOutcome
from service.adapters.unit_of_work import UnitOfWork
from service.bootstrap import Services
from service.deliveries import Delivery, Event, Subject
from service.domain import commands as c
from service.domain.errors import Conflict, DomainError, InvalidRequest, NotFound, PermissionDenied
from service.domain.model import Role, aware, normalise_email, now
from service.handlers import validate_email

log = logging.getLogger(__name__)

APPLY_FUNCTION = "apply_webhook"
MAX_KEY_PART = 120
SUSPENDING = frozenset({"employee.terminated", "employee.suspended", "employee.leave_started", "user.suspended"})
ACTIVATING = frozenset({"employee.returned", "user.activated"})
EMAIL_CHANGES = frozenset({"employee.email_changed", "user.email_changed"})
ADMIN_ROLE = frozenset({"admin_role.assigned", "admin_role.removed"})


class Unavailable(Exception):
    """The database or Redis could not take the event: nothing was acknowledged."""


class Unprocessable(InvalidRequest):
    """The event is well formed but cannot be taken (answered 422)."""


class UnknownSubject(Unprocessable):
    def __init__(self, message: str) -> None:
        super().__init__("unknown_subject", message)


class StaleEvent(Conflict):
    def __init__(self, newer_event: str, newer_at: datetime) -> None:
        super().__init__("stale_event", f"an event of {newer_at.isoformat()} ({newer_event}) was applied already")


class HandlerFailure(Exception):
    """The handlers refused an event without recording it (a taken email, a user gone): a
    failure, retried with backoff, since what refused it may change."""

    def __init__(self, refusal: DomainError) -> None:
        super().__init__(f"{refusal.code}: {refusal.message}")


class AlreadyDone(Conflict):
    def __init__(self, outcome: str) -> None:
        super().__init__("already_done", f"this event was handled before: {outcome}")
        self.outcome = outcome


@dataclass(frozen=True)
class Integration:
    id: str
    organization_id: str
    kind: str
    provider: str
    name: str
    role: Role
    delete_mode: str
    secrets: tuple[str, ...] = ()
    from_cache: bool = False  # read a few seconds ago: a signature it refuses is checked against a fresh read

    def actor(self) -> c.Actor:
        return c.Actor(self.organization_id, self.id, "integration", self.role, source=self.kind, name=self.name,
                       auth_method="webhook_signature")


@dataclass(frozen=True)
class Accepted:
    job_id: str
    replayed: bool

    @property
    def status_url(self) -> str:
        return f"/api/v1/jobs/{self.job_id}"


def attribute_of(event_type: str) -> str:
    """The attribute of the user an event type changes: events of one attribute are ordered."""
    if event_type in EMAIL_CHANGES:
        return "email"
    if event_type in ADMIN_ROLE:
        return "admin_role"
    return "state"


# --- receiving --------------------------------------------------------------------------------


class IntegrationCache:
    """Integrations as receivers last read them, for a few seconds, so a delivery costs one
    database transaction, not two. A signature that fails against a cached entry is checked
    again against a fresh read (a rotation counts at once); the previous secret's grace is
    checked at each use. A deleted integration may take deliveries for CACHE_SECONDS more: their
    jobs end ``dead`` (integration_not_found), as the job reads the integration afresh.

    An entry holds the integration twice, built once: with the secrets it accepts during the
    previous secret's grace, and with the current secret alone, for after it."""

    def __init__(self) -> None:
        self.entries: dict[str, tuple[float, Integration, Integration, datetime | None]] = {}

    def get(self, integration_id: str) -> tuple[Integration, Integration, datetime | None] | None:
        entry = self.entries.get(integration_id)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1:]

    def put(self, in_grace: Integration, after_grace: Integration, grace: datetime | None) -> None:
        if len(self.entries) >= CACHE_SIZE:
            self.entries.clear()
        self.entries[in_grace.id] = (time.monotonic() + CACHE_SECONDS, in_grace, after_grace, grace)

    def drop(self, integration_id: str) -> None:
        self.entries.pop(integration_id, None)


CACHE_SECONDS = 5.0
CACHE_SIZE = 10_000
integrations_seen = IntegrationCache()


async def load_integration(services: Services, integration_id: str, kind: str, *,
                           fresh: bool = False) -> Integration:
    """The integration a delivery is addressed to, with the secrets it accepts right now: its
    current one, and its previous one during the rotation grace."""
    integration_id = integration_id[:32]
    cached = None if fresh else integrations_seen.get(integration_id)
    from_cache = cached is not None
    if cached is None:
        row = await _read_integration(services, integration_id)
        if row is None:
            integrations_seen.drop(integration_id)
            raise NotFound("integration_not_found", f"no {kind} integration has this id")
        current = (services.box.open(row.secret_encrypted),) if row.secret_encrypted else ()
        previous = (services.box.open(row.previous_secret_encrypted),) if row.previous_secret_encrypted else ()
        grace = aware(row.previous_secret_expires_at) if previous else None
        columns = row._mapping
        cached = (_integration(columns, current + previous, True), _integration(columns, current, True), grace)
        integrations_seen.put(*cached)
    in_grace, after_grace, grace = cached
    if in_grace.kind != kind:
        raise NotFound("integration_not_found", f"no {kind} integration has this id")
    integration = in_grace if grace is not None and grace > now() else after_grace
    return integration if from_cache else dataclasses.replace(integration, from_cache=False)


async def _read_integration(services: Services, integration_id: str) -> Any:
    table = orm.integrations
    try:
        async with services.single_statements.connect() as conn:
            return (await conn.execute(sa.select(table).where(table.c.id == integration_id))).one_or_none()
    except (SQLAlchemyError, OSError) as exc:
        raise Unavailable("the database is unavailable") from exc


def _integration(columns: Any, secrets: tuple[str, ...] = (), from_cache: bool = False) -> Integration:
    """``columns``: the integration's columns by name (a SQLAlchemy row's ``_mapping``, or an
    asyncpg record, whose role is still its stored value)."""
    return Integration(columns["id"], columns["organization_id"], columns["kind"], columns["provider"] or "generic",
                       columns["name"], Role(columns["role"]), columns["delete_mode"], secrets, from_cache)


def idempotency_key(integration_id: str, delivery: Delivery, message_id: str | None, body: bytes) -> str:
    """The payload's own event id, else the Standard Webhooks message id, else the body's hash:
    each stays the same when a sender delivers the same event again."""
    part = delivery.event_id or message_id
    if part is None or len(part) > MAX_KEY_PART:
        part = "sha256:" + hashlib.sha256(body if part is None else part.encode()).hexdigest()
    return f"webhook:{integration_id}:{part}"


KnownEmails = dict[tuple[str, str], str]  # (organization id, lower-case email) -> user id


async def resolve_events(session: Any, integration: Integration, delivery: Delivery,
                         known: KnownEmails | None = None) -> list[dict[str, Any]]:
    """The delivery's events as a job carries them, each with the id of its user. ``known``:
    users already looked up by email for a whole batch of deliveries."""
    check_data(delivery)
    users: dict[Subject, str] = {}
    unknown: dict[Subject, str] = {}  # why no user was found
    to_learn: list[tuple[str, str]] = []  # (employee id, user id)
    for event in delivery.events:
        if event.subject in users or event.subject in unknown:
            continue
        try:
            user_id, learn = await _resolve_subject(session, integration, event.subject, known or {})
        except UnknownSubject as refusal:
            # One event alone is refused; in a list (BambooHR's employees) the others still count.
            if len(delivery.events) == 1:
                raise
            unknown[event.subject] = f"{refusal.code}: {refusal.message}"
            continue
        users[event.subject] = user_id
        if learn:
            to_learn.append((event.subject.employee_id or "", user_id))
    if not users:
        raise UnknownSubject("no user of this organization matches a subject of the delivery")
    # Only once the delivery is taken: a refused one teaches no link.
    for employee_id, user_id in dict.fromkeys(to_learn):
        await session.execute(orm.employee_links.insert().values(
            organization_id=integration.organization_id, integration_id=integration.id, employee_id=employee_id,
            user_id=user_id, created_at=now()))
    return job_events(delivery, users, unknown)


def known_subjects(integration: Integration, delivery: Delivery, known: KnownEmails) -> dict[Subject, str] | None:
    """The delivery's users when every subject is an email alone that ``known`` holds; None when
    one needs the database (an employee id to look up or learn, an external id, an email not
    found in the batch's lookup)."""
    users: dict[Subject, str] = {}
    for event in delivery.events:
        subject = event.subject
        if subject.employee_id or subject.external_id or not subject.email:
            return None
        user_id = known.get((integration.organization_id, normalise_email(subject.email)))
        if user_id is None:
            return None
        users[subject] = user_id
    return users


def job_events(delivery: Delivery, users: Mapping[Subject, str],
               unknown: Mapping[Subject, str] | None = None) -> list[dict[str, Any]]:
    """The delivery's events as a job carries them, with their users' ids; an event whose subject
    is ``unknown`` is carried as skipped, with the reason."""
    events = []
    for seq, event in enumerate(delivery.events):
        carried = {"seq": seq, "type": event.type, "occurred_at": event.occurred_at.isoformat(),
                   "user_id": users.get(event.subject), "subject": event.subject.as_dict(), "data": event.data}
        if unknown and event.subject in unknown:
            carried["skipped"] = unknown[event.subject]
        events.append(carried)
    return events


def check_data(delivery: Delivery) -> None:
    """What the payload parser cannot check alone: an admin role must be one adminlink knows."""
    for event in delivery.events:
        _check_event_data(event)


def _check_event_data(event: Event) -> None:
    if event.type in EMAIL_CHANGES:
        try:
            validate_email(event.data["email"])
        except InvalidRequest as exc:
            raise Unprocessable("invalid_payload", f"data.email: {exc.message}") from exc
    if event.type == "admin_role.assigned":
        try:
            Role(event.data["role"])
        except ValueError as exc:
            allowed = ", ".join(r.value for r in Role)
            raise Unprocessable("invalid_payload", f"data.role must be one of: {allowed}") from exc
        if not isinstance(event.data.get("api_access", False), bool):
            raise Unprocessable("invalid_payload", "data.api_access must be true or false")


async def _resolve_subject(session: Any, integration: Integration, subject: Subject,
                           known: KnownEmails) -> tuple[str, bool]:
    """The user an event is about: by the HR system's employee id (learned before), else the
    external id, else the email; and whether the employee id is new, to be learned with this user."""
    org = integration.organization_id
    links, users = orm.employee_links, orm.users
    user_id = None
    if subject.employee_id:
        user_id = await session.scalar(sa.select(links.c.user_id).where(
            links.c.organization_id == org, links.c.integration_id == integration.id,
            links.c.employee_id == subject.employee_id))
        if user_id is not None:
            return str(user_id), False
    if subject.external_id:
        found = (await session.execute(sa.select(users.c.id).where(
            users.c.organization_id == org, users.c.external_id == subject.external_id).limit(2))).all()
        if len(found) > 1:
            raise UnknownSubject("several users have this external_id")
        user_id = found[0].id if found else None
    if user_id is None and subject.email:
        user_id = known.get((org, normalise_email(subject.email))) or await session.scalar(sa.select(users.c.id).where(
            users.c.organization_id == org, sa.func.lower(users.c.email) == normalise_email(subject.email)))
    if user_id is None:
        raise UnknownSubject("no user of this organization matches the subject")
    return str(user_id), bool(subject.employee_id)


# --- applying ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One event of a job, as the ordering lock and the outcome table know it."""

    job_id: str
    seq: int
    organization_id: str
    user_id: str
    attribute: str
    occurred_at: datetime

    @property
    def event_key(self) -> str:
        return f"{self.job_id}#{self.seq}"


@dataclass
class EventResult:
    seq: int
    type: str
    user_id: str | None
    outcome: str  # applied | unchanged | stale | denied | skipped
    detail: str | None = None

    def view(self) -> dict[str, Any]:
        body: dict[str, Any] = {"seq": self.seq, "type": self.type, "user_id": self.user_id,
                                "outcome": self.outcome}
        if self.detail:
            body["detail"] = self.detail
        return body


async def apply(services: Services, job: ClaimedJob) -> JobOutcome:
    """The job of one delivery: its events in order. A handler failure propagates (the job is
    retried); a stale event, a permission denial and the events done before are outcomes."""
    integration = await _integration_of_job(services, job.organization_id, job.args["integration_id"])
    if integration is None:
        return JobOutcome("dead", error="integration_not_found: the integration was deleted before its events "
                                        "were applied")
    results = [await _apply_event(services, integration, job.id, event) for event in job.args["events"]]
    return summary(results)


# What a job needs of its integration, on either driver: not its secrets (the delivery was
# verified on receipt).
_JOB_COLUMNS = ("id", "organization_id", "kind", "provider", "name", "role", "delete_mode")
INTEGRATION_OF_JOB = sa.select(*(orm.integrations.c[name] for name in _JOB_COLUMNS)).where(
    orm.integrations.c.organization_id == sa.bindparam("org"), orm.integrations.c.id == sa.bindparam("id"))
DIRECT_INTEGRATION_OF_JOB = """
SELECT id, organization_id, kind, provider, name, role, delete_mode FROM integrations
WHERE organization_id = $1 AND id = $2"""


async def _integration_of_job(services: Services, org_id: str | None, integration_id: str) -> Integration | None:
    """Read afresh for each job (a deleted integration's jobs end dead; a changed role counts);
    on PostgreSQL on asyncpg itself, as every job runs it."""
    if services.direct is not None:
        async with services.direct.acquire() as conn:
            record = await conn.fetchrow(DIRECT_INTEGRATION_OF_JOB, org_id, integration_id)
        return _integration(record) if record is not None else None
    async with services.single_statements.connect() as conn:
        row = (await conn.execute(INTEGRATION_OF_JOB, {"org": org_id, "id": integration_id})).one_or_none()
    return _integration(row._mapping) if row is not None else None


async def _apply_event(services: Services, integration: Integration, job_id: str,
                       event: dict[str, Any]) -> EventResult:
    if event.get("skipped"):
        return EventResult(event["seq"], event["type"], None, "skipped", event["skipped"])
    step = Step(job_id, event["seq"], integration.organization_id, event["user_id"], attribute_of(event["type"]),
                datetime.fromisoformat(event["occurred_at"]).astimezone(UTC))
    result = EventResult(step.seq, event["type"], step.user_id, "applied")
    units = EventUnits(services, step)
    command = await command_for(services, integration, event)
    try:
        if command is None:
            async with units(integration.actor()):
                pass  # nothing to change, but the attribute's clock still moves on
        else:
            await services.bus_for(units).handle(command)
    except AlreadyDone as done:
        result.outcome = done.outcome
    except StaleEvent as stale:
        result.outcome, result.detail = "stale", stale.message
    except DomainError as refusal:
        if not isinstance(refusal, PermissionDenied) and refusal.record is None:
            raise HandlerFailure(refusal) from refusal
        result.outcome, result.detail = "denied", f"{refusal.code}: {refusal.message}"
    else:
        result.outcome = units.outcome or "applied"
    return result


async def command_for(services: Services, integration: Integration, event: dict[str, Any]) -> c.Command | None:
    """The command an event asks for; None when the user is already as the event says."""
    actor, kind, user_id, data = integration.actor(), event["type"], event["user_id"], event["data"]
    if kind in SUSPENDING:
        return c.SuspendUser(actor, user_id)
    if kind in ACTIVATING:
        return c.ActivateUser(actor, user_id)
    if kind == "user.deleted":
        # The integration's delete_mode decides, as for SCIM: by default a deletion suspends.
        return c.DeleteUser(actor, user_id) if integration.delete_mode == "delete" else c.SuspendUser(actor, user_id)
    if kind in EMAIL_CHANGES:
        return c.UpdateUser(actor, user_id, {"email": data["email"]})
    assigning = kind == "admin_role.assigned"
    async with services.uow(actor) as uow:
        user, admin = await uow.users.get_with_linked_admin(actor.organization_id, user_id) or (None, None)
        same_email = None
        if assigning and user is not None and admin is None:
            same_email = await uow.admins.by_email(actor.organization_id, user.email)
    if assigning:
        role = Role(data["role"])
        if admin is None and same_email is not None and not same_email.is_linked:
            # The seed's other way in: the admin who has the user's email is linked to it.
            return c.LinkAdminToUser(actor, same_email.id, acknowledge=True, role=role)
        if admin is None:
            return c.CreateAdminFromUser(actor, role, user_id=user_id, api_access=bool(data.get("api_access")))
        return c.UpdateAdmin(actor, admin.id, role=role) if admin.role != role else None
    if kind == "admin_role.removed":
        return c.RemoveAdminAccess(actor, admin.id, acknowledge=True) if admin is not None else None
    raise NotFound("unknown_event_type", f"{kind!r} has no command")


def summary(results: list[EventResult]) -> JobOutcome:
    """``denied`` if any event was refused, ``stale`` if every event not skipped was, else
    ``complete``."""
    body = {"events": [r.view() for r in results]}
    denied = [r for r in results if r.outcome == "denied"]
    if denied:
        return JobOutcome("denied", body, error=denied[0].detail)
    considered = [r for r in results if r.outcome != "skipped"]
    if considered and all(r.outcome == "stale" for r in considered):
        return JobOutcome("stale", body)
    return JobOutcome("complete", body)


# --- the units of work of one event -----------------------------------------------------------


class EventUnits:
    """The unit-of-work factory the bus gets for one event. The command's own unit of work holds
    the ordering lock; the bus asks for a second one only to record a refusal."""

    def __init__(self, services: Services, step: Step) -> None:
        self.services = services
        self.step = step
        self.ordered: OrderedUnitOfWork | None = None

    def __call__(self, actor: c.Actor) -> UnitOfWork:
        if self.ordered is None:
            self.ordered = OrderedUnitOfWork(self.services, actor, self.step)
            return self.ordered
        return RefusalUnitOfWork(self.services, actor, self.step)

    @property
    def outcome(self) -> str | None:
        return self.ordered.outcome if self.ordered else None


def _take_turn_statement(insert: Any) -> Any:
    """One statement takes the event's turn: it creates the clock if needed and locks it (an
    upsert's update locks the row; on SQLite, any write takes the database's write lock), moves it
    to the event unless a newer event is there (the move is undone with the transaction if the
    event is not applied), and answers the clock and the event's recorded outcome, if any."""
    versions, outcomes = orm.attribute_versions, orm.webhook_event_outcomes
    statement = insert(versions)
    newer_or_same = versions.c.occurred_at <= statement.excluded.occurred_at
    outcome = sa.select(outcomes.c.outcome).where(
        outcomes.c.job_id == sa.bindparam("job_id"), outcomes.c.seq == sa.bindparam("seq")).scalar_subquery()
    return statement.on_conflict_do_update(
        index_elements=[versions.c.organization_id, versions.c.user_id, versions.c.attribute],
        set_={"occurred_at": sa.case((newer_or_same, statement.excluded.occurred_at), else_=versions.c.occurred_at),
              "event_id": sa.case((newer_or_same, statement.excluded.event_id), else_=versions.c.event_id)},
    ).returning(versions.c.occurred_at, versions.c.event_id, outcome.label("outcome"))


# Built once: each event runs it (building a statement costs more Python than running it).
TAKE_TURN = {"postgresql": _take_turn_statement(postgresql.insert), "sqlite": _take_turn_statement(sqlite.insert)}


class OrderedUnitOfWork(UnitOfWork):
    """A unit of work that first takes the turn of its event's (user, attribute): a row lock on
    PostgreSQL, the write lock on SQLite, held until commit, so concurrent events of one
    attribute apply one after the other and an older one never lands after a newer one."""

    def __init__(self, services: Services, actor: c.Actor, step: Step) -> None:
        super().__init__(services.session_factory, services.queue, services.sessions, services.box, actor)
        self.step = step
        self.dialect = services.engine.dialect.name
        self.outcome: str | None = None

    async def __aenter__(self) -> OrderedUnitOfWork:
        await super().__aenter__()
        try:
            await self._take_turn()
        except BaseException:
            await self.session.close()  # __aexit__ does not run when __aenter__ raises
            raise
        return self

    async def _take_turn(self) -> None:
        step = self.step
        clock = (await self.session.execute(TAKE_TURN[self.dialect], {
            "organization_id": step.organization_id, "user_id": step.user_id, "attribute": step.attribute,
            "occurred_at": step.occurred_at, "event_id": step.event_key, "job_id": step.job_id,
            "seq": step.seq})).one()
        if clock.outcome is not None:
            raise AlreadyDone(clock.outcome)
        if clock.event_id != step.event_key:  # the clock stayed with a newer event
            newest = aware(clock.occurred_at)
            assert newest is not None
            raise StaleEvent(clock.event_id, newest)

    async def commit(self) -> None:
        if self.outcome is None:
            self.outcome = "applied" if self.events else "unchanged"
            await write_outcome(self.session, self.step, self.outcome)
        await super().commit()

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        try:
            if exc_type is None and self.outcome is None:
                await self.commit()  # a handler that found nothing to change: the clock moves on
        finally:
            await super().__aexit__(exc_type, exc, tb)


class RefusalUnitOfWork(UnitOfWork):
    """Where the bus records a refusal: the event's outcome is written with the record."""

    def __init__(self, services: Services, actor: c.Actor, step: Step) -> None:
        super().__init__(services.session_factory, services.queue, services.sessions, services.box, actor)
        self.step = step

    async def commit(self) -> None:
        await write_outcome(self.session, self.step, "denied")
        await super().commit()


async def write_outcome(session: Any, step: Step, outcome: str) -> None:
    await session.execute(orm.webhook_event_outcomes.insert(), {
        "job_id": step.job_id, "seq": step.seq, "organization_id": step.organization_id, "outcome": outcome,
        "recorded_at": now()})

