"""Inbound webhook events: recorded and enqueued on receipt, applied in batches.

Receiving (``service.intake``, with the helpers here): the delivery becomes one row of the jobs
table, keyed by its idempotency key, in one transaction with the employee-id links it teaches;
then arq is woken: one drain job per integration, with a fixed id. A delivery seen before answers
the same job. If the database or Redis cannot take it, the caller answers 503 (``Unavailable``);
a committed row that arq never heard of is enqueued by the reconciler.

Applying (``drain``, ``apply_batch``): the drain claims the integration's waiting rows in order,
up to ``ADMINLINK_WEBHOOK_BATCH_MAX``, and applies them in one batch unit of work
(``adapters.webhook_batch``). Each event becomes a command for the message bus, run with the
integration as its actor, so the same handlers and permission checks decide; around it:

- the attribute's clock (``attribute_versions``: user, attribute, newest occurred_at), locked
  for the batch: an event older than it is ``stale`` and changes nothing;
- the event's outcome (``webhook_event_outcomes``), committed with the change it made, so a job
  run again skips what it already did: no second change, record or email. A refusal that the bus
  records (a permission denial) gets its outcome with its record.

Each event stands alone: one that is refused or fails is undone alone and gets its own outcome
(a failure fails its job, retried with backoff), while the batch's other events stay applied.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import logging
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from service import metrics
from service.adapters.jobs import ClaimedJob, JobOutcome, backoff
from service.adapters.unit_of_work import UnitOfWork
from service.adapters.webhook_batch import Clock, ClockKey, EventUnitOfWork, WebhookBatch, Writes, claim_next
from service.adapters.webhook_intake import DATABASE_DOWN, DeliveryWrites, KnownEmails
from service.bootstrap import Services
from service.deliveries import Delivery, Event, Subject
from service.domain import commands as c
from service.domain.errors import DomainError, InvalidRequest, NotFound, PermissionDenied
from service.domain.model import Role, aware, normalise_email, now
from service.handlers import validate_email
from service.logging import correlated, in_batch, log_error

log = logging.getLogger(__name__)

APPLY_FUNCTION = "apply_webhook"  # the jobs-table function of a delivery's row
DRAIN_FUNCTION = "drain_webhooks"  # the arq job that applies an integration's waiting rows
DRAIN_PREFIX = "drain:"
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


class HandlerFailure(Exception):
    """The handlers refused an event without recording it (a taken email, a user gone): a
    failure, retried with backoff, since what refused it may change."""

    def __init__(self, refusal: DomainError) -> None:
        super().__init__(f"{refusal.code}: {refusal.message}")


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


async def load_integration(services: Services, integration_id: str, kind: str, *,
                           fresh: bool = False) -> Integration:
    """The integration a delivery is addressed to, with the secrets it accepts right now: its
    current one, and its previous one during the rotation grace. Kept for a few seconds
    (``services.integrations_seen``), so a delivery costs one database transaction, not two."""
    integration_id = integration_id[:32]
    seen = services.integrations_seen
    cached = None if fresh else seen.get(integration_id)
    from_cache = cached is not None
    if cached is None:
        try:
            row = await services.deliveries.integration(integration_id)
        except DATABASE_DOWN as exc:
            raise Unavailable("the database is unavailable") from exc
        if row is None:
            seen.drop(integration_id)
            raise NotFound("integration_not_found", f"no {kind} integration has this id")
        current = (services.box.open(row.secret_encrypted),) if row.secret_encrypted else ()
        previous = (services.box.open(row.previous_secret_encrypted),) if row.previous_secret_encrypted else ()
        grace = aware(row.previous_secret_expires_at) if previous else None
        columns = row._mapping
        cached = (_integration(columns, current + previous, True), _integration(columns, current, True), grace)
        seen.put(integration_id, *cached)
    in_grace, after_grace, grace = cached
    if in_grace.kind != kind:
        raise NotFound("integration_not_found", f"no {kind} integration has this id")
    integration = in_grace if grace is not None and grace > now() else after_grace
    return integration if from_cache else dataclasses.replace(integration, from_cache=False)


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


async def resolve_events(writes: DeliveryWrites, integration: Integration, delivery: Delivery,
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
            user_id, learn = await _resolve_subject(writes, integration, event.subject, known or {})
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
    await writes.learn_links(integration.organization_id, integration.id, list(dict.fromkeys(to_learn)))
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


async def _resolve_subject(writes: DeliveryWrites, integration: Integration, subject: Subject,
                           known: KnownEmails) -> tuple[str, bool]:
    """The user an event is about: by the HR system's employee id (learned before), else the
    external id, else the email; and whether the employee id is new, to be learned with this user."""
    org = integration.organization_id
    user_id = None
    if subject.employee_id:
        user_id = await writes.user_of_employee(org, integration.id, subject.employee_id)
        if user_id is not None:
            return user_id, False
    if subject.external_id:
        found = await writes.users_of_external_id(org, subject.external_id)
        if len(found) > 1:
            raise UnknownSubject("several users have this external_id")
        user_id = found[0] if found else None
    if user_id is None and subject.email:
        email = normalise_email(subject.email)
        user_id = known.get((org, email)) or await writes.user_of_email(org, email)
    if user_id is None:
        raise UnknownSubject("no user of this organization matches the subject")
    return user_id, bool(subject.employee_id)


# --- applying ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One event of a job, as the ordering clock and the outcome table know it."""

    job_id: str
    seq: int
    user_id: str
    attribute: str
    occurred_at: datetime

    @property
    def event_key(self) -> str:
        return f"{self.job_id}#{self.seq}"

    @property
    def clock_key(self) -> ClockKey:
        return self.user_id, self.attribute


@dataclass
class EventResult:
    seq: int
    type: str
    user_id: str | None
    outcome: str  # applied | unchanged | stale | denied | skipped; failed (the job fails, retried)
    detail: str | None = None

    def view(self) -> dict[str, Any]:
        body: dict[str, Any] = {"seq": self.seq, "type": self.type, "user_id": self.user_id,
                                "outcome": self.outcome}
        if self.detail:
            body["detail"] = self.detail
        return body


@dataclass
class Ran:
    """One event's run in a batch. ``undo``: the handlers refused or failed after they may have
    changed something, so the event's segment is rolled back; ``kept`` is what stays then (the
    refusal's records), ``failure`` what fails the job."""

    result: EventResult
    undo: bool = False
    kept: Writes | None = None
    failure: DomainError | None = None


class EventUnits:
    """The unit-of-work factory the bus gets for one event: the command's own unit of work, and a
    second one only where the bus records a refusal."""

    def __init__(self, batch: WebhookBatch) -> None:
        self.batch = batch
        self.first: EventUnitOfWork | None = None
        self.refusal: EventUnitOfWork | None = None

    def __call__(self, actor: c.Actor) -> UnitOfWork:
        if self.first is None:
            self.first = self.batch.unit(actor)
            return self.first
        self.refusal = self.batch.unit(actor)
        return self.refusal


def drain_job(integration: Integration) -> tuple[str, tuple[str, str]]:
    """The integration's drain job: its fixed id, and its arguments."""
    return (f"{DRAIN_PREFIX}{integration.organization_id}:{integration.id}",
            (integration.organization_id, integration.id))


async def drain(services: Services, organization_id: str, integration_id: str, *, lapsed: bool = False) -> int:
    """One batch of the integration's waiting events: claimed, applied, committed. Answers how
    many jobs it took (0: none was waiting). ``lapsed``: the rows a dead worker had claimed (in
    progress for longer than ``ADMINLINK_JOB_TIMEOUT``), which a drain takes first."""
    lapse = timedelta(seconds=services.settings.job_timeout) if lapsed else None
    jobs = await claim_next(services.single_statements, APPLY_FUNCTION, organization_id, integration_id,
                            services.settings.webhook_batch_max, lapse)
    if jobs:
        await apply_claimed(services, jobs)
    return len(jobs)


async def apply_claimed(services: Services, jobs: list[ClaimedJob]) -> dict[str, str]:
    """Applies claimed jobs as one batch; answers the status each row ended in. If the database
    fails the batch for a reason no event explains (a lost connection, a deadlock), each job is
    applied again in a batch of its own."""
    try:
        return await apply_batch(services, jobs)
    except DATABASE_DOWN as exc:  # the database unreachable, or a statement it refused
        if len(jobs) == 1:
            raise
        log_error(log, exc, "webhook batch %s of %d jobs failed; applying them one at a time", batch_id(jobs),
                  len(jobs), level=logging.WARNING)
    ended: dict[str, str] = {}
    for job in jobs:
        try:
            ended.update(await apply_batch(services, [job]))
        except Exception as alone:  # noqa: BLE001 (its claim lapses and it is claimed again)
            log_error(log, alone, "webhook job %s failed", job.id)
    return ended


def batch_id(jobs: list[ClaimedJob]) -> str:
    """A batch is named by its first job and its size: ``<job id>+<n>``."""
    return f"{jobs[0].id}+{len(jobs)}"


async def apply_batch(services: Services, jobs: list[ClaimedJob]) -> dict[str, str]:
    """The claimed jobs' events in order, through the same handlers and permission checks, in one
    transaction; each job's row ends with its outcome in the same commit. Answers the status each
    row ended in (a row another worker claimed since is left to it)."""
    started = time.perf_counter()
    batch = services.webhook_batch(jobs)
    with in_batch(batch_id(jobs)):
        async with batch:
            if not batch.jobs:
                return {}
            first = batch.jobs[0]
            row = await batch.integration(first.organization_id or "", first.args["integration_id"])
            if row is None:
                for job in batch.jobs:
                    batch.finish(job, "dead", error="integration_not_found: the integration was deleted before its "
                                                    "events were applied")
            else:
                await _run_batch(services, batch, _integration(row._mapping))
            kept = await batch.commit()
        ended = {row["job_id"]: row["new_status"] for row in kept.finished}
        seconds = time.perf_counter() - started
        log.info("webhook batch of %d jobs applied in %.1f ms", len(ended), seconds * 1000,
                 extra={"batch_size": len(ended), "statuses": dict(collections.Counter(ended.values()))})
        await metrics.record_batch(services.redis, APPLY_FUNCTION, list(ended.values()), seconds)
    return ended


def _step(job: ClaimedJob, event: dict[str, Any]) -> Step:
    return Step(job.id, event["seq"], event["user_id"], attribute_of(event["type"]),
                datetime.fromisoformat(event["occurred_at"]).astimezone(UTC))


async def _run_batch(services: Services, batch: WebhookBatch, integration: Integration) -> None:
    """Runs the events in segments (savepoints). An event to undo rolls its segment back; the
    segment's events before it run again, and it and every later event of the batch then run in
    a segment of their own, so one refusal costs one replay, never one per event."""
    events = [(job, event) for job in batch.jobs for event in job.args["events"]]
    await batch.preload(integration.organization_id, [_step(job, e).clock_key for job, e in events
                                                      if not e.get("skipped")])
    first_of_job: dict[str, int] = {}
    for i, (job, _) in enumerate(events):
        first_of_job.setdefault(job.id, i)
    last_of_job = {job.id: i for i, (job, _) in enumerate(events)}
    runs: list[Ran | None] = []  # one per event; None for an event after its job failed
    alone_from, start, i = len(events), 0, 0
    await batch.begin_segment()
    while i < len(events):
        job, event = events[i]
        if i >= alone_from and i > start:
            await batch.end_segment()
            await batch.begin_segment()
            start = i
        failed = any(r is not None and r.failure for r in runs[first_of_job[job.id]:i])
        with correlated("job", job.id):
            ran = None if failed else await _run_event(services, batch, integration, job, event)
        if ran is not None and ran.undo:
            await batch.undo_segment()
            await batch.begin_segment()
            if i < alone_from:
                alone_from, i = i, start
                del runs[start:]
                continue
            if ran.kept is not None:
                batch.keep(ran.kept)
                batch.keep_outcome(job.id, ran.result.seq, "denied")
        runs.append(ran)
        if last_of_job[job.id] == i:
            _finish(services, batch, job, runs[first_of_job[job.id]:])
        i += 1


async def _run_event(services: Services, batch: WebhookBatch, integration: Integration, job: ClaimedJob,
                     event: dict[str, Any]) -> Ran:
    result = EventResult(event["seq"], event["type"], event.get("user_id"), "applied")
    if event.get("skipped"):
        result.outcome, result.detail = "skipped", event["skipped"]
        return Ran(result)
    step = _step(job, event)
    done = batch.outcome_of(job.id, step.seq)
    if done is not None:  # a rerun: no second change, record or email
        result.outcome = done
        return Ran(result)
    clock = batch.clock(step.clock_key)
    if clock is not None and clock.occurred_at > step.occurred_at:
        result.outcome = "stale"
        result.detail = f"an event of {clock.occurred_at.isoformat()} ({clock.event_id}) was applied already"
        return Ran(result)
    if event["type"] in ADMIN_ROLE or event["type"] == "user.deleted":
        batch.forget(step.user_id)  # its admin identity may change: read afresh from here on
    units = EventUnits(batch)
    try:
        command = await command_for(batch.unit, integration, event)
        if command is not None:
            await services.bus_for(units).handle(command)
        if units.first is not None and not units.first.committed:
            await units.first.commit()  # a handler that found nothing to change
    except DomainError as refusal:
        if not isinstance(refusal, PermissionDenied) and refusal.record is None:
            result.outcome = "failed"
            return Ran(result, undo=True, failure=refusal)
        result.outcome, result.detail = "denied", f"{refusal.code}: {refusal.message}"
        return Ran(result, undo=True, kept=units.refusal.writes if units.refusal is not None else None)
    if units.first is not None:
        batch.keep(units.first.writes)
    result.outcome = "applied" if units.first is not None and units.first.changed else "unchanged"
    batch.keep_outcome(job.id, step.seq, result.outcome)
    batch.move_clock(step.clock_key, Clock(step.occurred_at, step.event_key))
    return Ran(result)


def _finish(services: Services, batch: WebhookBatch, job: ClaimedJob, runs: list[Ran | None]) -> None:
    """The job's row ends as its events say: a failed event fails it (retried with backoff, until
    ``dead``); else ``summary``."""
    failure = next((r.failure for r in runs if r is not None and r.failure is not None), None)
    if failure is None:
        outcome = summary([r.result for r in runs if r is not None])
        batch.finish(job, outcome.status, result=outcome.result, error=outcome.error)
        return
    error = "".join(traceback.format_exception_only(HandlerFailure(failure)))
    if job.tries >= services.settings.job_max_tries:
        log.error("job %s (%s) is dead after %d tries: %s", job.id, job.function, job.tries, error.strip())
        batch.finish(job, "dead", error=error)
    else:
        batch.finish(job, "failed", error=error, retry_in=backoff(job.tries))


async def command_for(units: Callable[[c.Actor], UnitOfWork], integration: Integration,
                      event: dict[str, Any]) -> c.Command | None:
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
    if kind == "admin_role.assigned":
        return c.AssignAdminRole(actor, user_id, Role(data["role"]), api_access=bool(data.get("api_access")))
    if kind == "admin_role.removed":
        async with units(actor) as uow:
            found = await uow.users.get_with_linked_admin(actor.organization_id, user_id)
        admin = found[1] if found is not None else None
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
