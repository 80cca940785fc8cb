"""The batch unit of work: many webhook events of one integration in one transaction.

ARCHITECTURE.md, "Many events, one transaction". The rows of a batch are claimed from the jobs
table (``claim_next``: in order, ``FOR UPDATE SKIP LOCKED`` on PostgreSQL, committed at once so
the ops views show them running), then one transaction:

- locks the claimed rows again (a row claimed since by another worker is left to it: the claim
  counts the row's tries, and the try is the claim's token), reads the integration, and preloads
  what every event needs in three statements: the users with their admin identities, the clocks
  of the (user, attribute) pairs the events touch (created if missing, then locked in one order,
  so two batches never wait on each other in a circle), and the outcomes of events done before;
- runs each event through the same handlers on an ``EventUnitOfWork``: the handlers' reads and
  changes go to the batch's session; what their commit writes (Directory Insights records,
  outbox rows, job rows, outcomes) is kept in memory and written with one statement per table;
- commits once, then hands the new jobs to arq and deletes ended sessions' keys, once each.

An event that must be undone (a refused or failing handler) is undone alone: events run inside a
savepoint (a *segment*); undoing one rolls the segment back and runs its events again, the
refused one in a segment of its own (see ``service.inbound.apply_batch``).

SQLite (the embedded default) runs the same code: it has no ``FOR UPDATE``, and its one writer
makes it unneeded.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, AsyncSessionTransaction, async_sessionmaker

from service.adapters import orm
from service.adapters.crypto import SecretBox
from service.adapters.errors import raise_conflict_of
from service.adapters.jobs import ClaimedJob
from service.adapters.queue import REDIS_ANSWER_TIMEOUT, Queue
from service.adapters.repository import Users
from service.adapters.sessions import SessionStore
from service.adapters.unit_of_work import INSERT_JOB, INSERT_RECORD, UnitOfWork
from service.domain.commands import Actor
from service.domain.events import SessionsEnded
from service.domain.model import Admin, User, aware, new_id, now

log = logging.getLogger(__name__)

# A clock created for a pair that had none: older than any event, so the first one applies.
NO_CLOCK = datetime(1970, 1, 1, tzinfo=UTC)

ClockKey = tuple[str, str]  # (user id, attribute)


@dataclass(frozen=True)
class Clock:
    occurred_at: datetime
    event_id: str


@dataclass
class Writes:
    """What the events of one segment wrote, kept until the batch commits."""

    records: list[dict[str, Any]] = field(default_factory=list)
    mails: list[dict[str, Any]] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    outcomes: list[dict[str, Any]] = field(default_factory=list)
    finished: list[dict[str, Any]] = field(default_factory=list)
    retries: list[tuple[str, str, float]] = field(default_factory=list)  # (function, job id, seconds): next tries
    ended: list[SessionsEnded] = field(default_factory=list)

    def extend(self, other: Writes) -> None:
        for name in self.__dataclass_fields__:
            getattr(self, name).extend(getattr(other, name))


# --- statements, built once ---------------------------------------------------------------------

_jobs = orm.jobs


# The integration of a row (in its arguments), written as migration 0006's index has it on
# PostgreSQL, the key in the statement itself: a bound key would not match the index.
INTEGRATION_OF_ROW = {
    "postgresql": _jobs.c.args.op("->>", return_type=sa.String())(sa.literal_column("'integration_id'")),
    "sqlite": sa.func.json_extract(_jobs.c.args, sa.literal_column("'$.integration_id'"), type_=sa.String()),
}


def _claim(dialect: str, waiting: sa.ColumnElement[bool]) -> Any:
    """Marks in progress the oldest ``waiting`` rows of an integration, skipping rows that other
    workers hold. On PostgreSQL the waiting ones come in order from migration 0006's index, so the
    scan stops at the limit however long the backlog."""
    candidates = (
        sa.select(_jobs.c.id)
        .where(_jobs.c.organization_id == sa.bindparam("org"), waiting,
               _jobs.c.function == sa.bindparam("job_function"),
               INTEGRATION_OF_ROW[dialect] == sa.bindparam("integration"))
        .order_by(_jobs.c.created_at, _jobs.c.id)
        .limit(sa.bindparam("limit"))
        .with_for_update(skip_locked=True)
    )
    return (
        sa.update(_jobs)
        .where(_jobs.c.id.in_(candidates.scalar_subquery()))
        .values(status="in_progress", tries=_jobs.c.tries + 1, started_at=sa.bindparam("at"))
        .returning(_jobs.c.id, _jobs.c.organization_id, _jobs.c.function, _jobs.c.args, _jobs.c.tries,
                   _jobs.c.created_at)
    )


CLAIM_QUEUED = {dialect: _claim(dialect, _jobs.c.status == "queued") for dialect in INTEGRATION_OF_ROW}
# Claimed by a worker that died: the claim is older than a run may last.
CLAIM_LAPSED = {dialect: _claim(dialect, sa.and_(_jobs.c.status == "in_progress",
                                                 _jobs.c.started_at < sa.bindparam("lapsed")))
                for dialect in INTEGRATION_OF_ROW}
# The claimed rows, locked for the batch's transaction; a row claimed again meanwhile has more tries.
LOCK_CLAIMED = (
    sa.select(_jobs.c.id, _jobs.c.tries)
    .where(_jobs.c.id.in_(sa.bindparam("ids", expanding=True)), _jobs.c.status == "in_progress")
    .with_for_update()
)
FINISH = (
    sa.update(_jobs)
    .where(_jobs.c.id == sa.bindparam("job_id"), _jobs.c.status == "in_progress",
           _jobs.c.tries == sa.bindparam("claimed_tries"))
    .values(status=sa.bindparam("new_status"), result=sa.bindparam("new_result", type_=_jobs.c.result.type),
            error=sa.bindparam("new_error"), finished_at=sa.bindparam("at"),
            defer_until=sa.func.coalesce(sa.bindparam("retry_at", type_=_jobs.c.defer_until.type),
                                         _jobs.c.defer_until))
)

_JOB_COLUMNS = ("id", "organization_id", "kind", "provider", "name", "role", "delete_mode")
INTEGRATION = sa.select(*(orm.integrations.c[name] for name in _JOB_COLUMNS)).where(
    orm.integrations.c.organization_id == sa.bindparam("org"), orm.integrations.c.id == sa.bindparam("id"))



@functools.cache
def _users_with_admins() -> sa.Select[User, Admin]:
    """Built at first use: the domain classes are mapped at start-up."""
    users, admins = orm.users, orm.admins
    return (
        sa.select(User, Admin)
        .select_from(users.outerjoin(admins, sa.and_(admins.c.organization_id == users.c.organization_id,
                                                     admins.c.linked_user_id == users.c.id)))
        .where(users.c.organization_id == sa.bindparam("org"), users.c.id.in_(sa.bindparam("ids", expanding=True)))
        .execution_options(populate_existing=True)
    )


_versions = orm.attribute_versions


def _take_clocks(insert: Any) -> Any:
    """Each pair's clock, created if missing (older than any event) and locked either way (an
    upsert's update locks the row; on SQLite, any write takes the database's write lock)."""
    statement = insert(_versions).values(occurred_at=NO_CLOCK, event_id="")
    return statement.on_conflict_do_update(
        index_elements=[_versions.c.organization_id, _versions.c.user_id, _versions.c.attribute],
        set_={"occurred_at": _versions.c.occurred_at},
    ).returning(_versions.c.user_id, _versions.c.attribute, _versions.c.occurred_at, _versions.c.event_id)


TAKE_CLOCKS = {"postgresql": _take_clocks(postgresql.insert), "sqlite": _take_clocks(sqlite.insert)}
MOVE_CLOCK = (
    sa.update(_versions)
    .where(_versions.c.organization_id == sa.bindparam("org"), _versions.c.user_id == sa.bindparam("user"),
           _versions.c.attribute == sa.bindparam("attr"))
    .values(occurred_at=sa.bindparam("at"), event_id=sa.bindparam("event"))
)
_outcomes = orm.webhook_event_outcomes
OUTCOMES = sa.select(_outcomes.c.job_id, _outcomes.c.seq, _outcomes.c.outcome).where(
    _outcomes.c.job_id.in_(sa.bindparam("ids", expanding=True)))
INSERT_OUTCOME = _outcomes.insert()
INSERT_MAIL = orm.mail_outbox.insert()


async def claim_next(engine: AsyncEngine, function: str, organization_id: str, integration_id: str, limit: int,
                     lapse: timedelta | None = None) -> list[ClaimedJob]:
    """Up to ``limit`` waiting rows of the integration, oldest first, marked in progress (one
    statement, committed on its own): rows other workers hold are skipped, not waited for. With
    ``lapse``, the rows whose claim is older than that instead (their worker died)."""
    at = now()
    params = {"org": organization_id, "job_function": function, "integration": integration_id, "limit": limit,
              "at": at}
    async with engine.connect() as conn:
        dialect = conn.dialect.name
        if lapse is None:
            rows = list(await conn.execute(CLAIM_QUEUED[dialect], params))
        else:
            rows = list(await conn.execute(CLAIM_LAPSED[dialect], {**params, "lapsed": at - lapse}))
    rows.sort(key=lambda row: (_aware(row.created_at), row.id))
    return [ClaimedJob(row.id, row.organization_id, row.function, row.args, row.tries) for row in rows]


def _aware(moment: datetime) -> datetime:
    """A stored moment in UTC (SQLite gives it back without its zone)."""
    converted = aware(moment)
    assert converted is not None
    return converted


# --- the units of work ------------------------------------------------------------------------


class PreloadedUsers(Users):
    """Users as the batch preloaded them (one statement for all), read again from the database
    for a user the batch was told to ``forget``."""

    def __init__(self, session: AsyncSession, loaded: dict[str, tuple[User, Admin | None]]) -> None:
        super().__init__(session)
        self.loaded = loaded

    async def get_with_linked_admin(self, org_id: str, user_id: str) -> tuple[User, Admin | None] | None:
        found = self.loaded.get(user_id)
        if found is not None and found[0].organization_id == org_id:
            return found
        return await super().get_with_linked_admin(org_id, user_id)

    async def delete(self, user: User) -> None:
        self.loaded.pop(user.id, None)
        await super().delete(user)


class _KeptOutbox:
    """Where an event's unit of work writes outbox rows: kept for the batch's one insert."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    async def add(self, org_id: str, recipient: str, subject: str, body: str) -> str:
        mail_id = new_id()
        self.rows.append({"id": mail_id, "organization_id": org_id, "recipient": recipient, "subject": subject,
                          "body": body, "status": "pending", "created_at": now()})
        return mail_id


class EventUnitOfWork(UnitOfWork):
    """One event's unit of work inside a batch: the same repositories as a unit of work of its
    own, on the batch's session. Its commit writes nothing yet: what it would write is kept in
    ``writes``, and the batch decides (with the event's outcome) whether it stays."""

    def __init__(self, batch: WebhookBatch, actor: Actor) -> None:
        super().__init__(batch.session_of, batch.queue, batch.sessions, batch.box, actor)
        self.batch = batch
        self.writes = Writes()
        self.committed = False
        self.changed = False  # whether a commit collected anything: ``applied`` rather than ``unchanged``

    async def __aenter__(self) -> EventUnitOfWork:
        await super().__aenter__()
        self.users = self.batch.users
        self.outbox = _KeptOutbox(self.writes.mails)  # type: ignore[assignment]  # the same add(), kept
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        raise_conflict_of(exc)  # the session is the batch's: it stays open

    async def add_job(self, function: str, args: dict[str, str], idempotency_key: str | None = None) -> str:
        row = self.job_row(function, args, idempotency_key)
        self.writes.jobs.append(row)
        return str(row["id"])

    async def _record(self, event: Any, at: object) -> None:
        self.writes.records.append(self.record_row(event, at))

    async def commit(self) -> None:
        self.changed = self.changed or bool(self.events)
        self.writes.ended.extend(e for e in self.events if isinstance(e, SessionsEnded))
        await self._write_events()
        self.events = []
        self.committed = True


class WebhookBatch:
    """The batch unit of work over claimed rows (see the module's docstring)."""

    def __init__(self, session_factory: async_sessionmaker[AsyncSession], queue: Queue, sessions: SessionStore,
                 box: SecretBox, jobs: list[ClaimedJob]) -> None:
        self.session_factory = session_factory
        self.queue, self.sessions, self.box = queue, sessions, box
        self.claimed = jobs
        self.jobs: list[ClaimedJob] = []
        self.loaded: dict[str, tuple[User, Admin | None]] = {}
        self.clocks: dict[ClockKey, Clock] = {}
        self.done: dict[tuple[str, int], str] = {}
        self.kept = Writes()  # segments that ended
        self.segment = Writes()
        self._savepoint: AsyncSessionTransaction | None = None
        self._segments = 0  # begun so far: the first is the transaction itself, no savepoint
        self._at_segment: tuple[dict[ClockKey, Clock], set[ClockKey]] = ({}, set())
        self._moved: set[ClockKey] = set()
        self._organization_id = ""
        self._clock_keys: list[ClockKey] = []
        self._user_ids: list[str] = []

    async def __aenter__(self) -> WebhookBatch:
        self.session = self.session_factory()
        self.dialect = self.session.get_bind().dialect.name
        self.users = PreloadedUsers(self.session, self.loaded)
        try:
            self.jobs = await self._lock_claimed()
        except BaseException:
            await self.session.close()
            raise
        return self

    async def _lock_claimed(self) -> list[ClaimedJob]:
        held = {row.id: row.tries for row in await self.session.execute(
            LOCK_CLAIMED, {"ids": [job.id for job in self.claimed]})}
        return [job for job in self.claimed if held.get(job.id) == job.tries]

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.session.close()  # rolls back what was not committed

    async def integration(self, organization_id: str, integration_id: str) -> Any:
        """The integration's row, read afresh (a deleted one's jobs end dead; a changed role counts)."""
        result = await self.session.execute(INTEGRATION, {"org": organization_id, "id": integration_id})
        return result.one_or_none()

    async def preload(self, organization_id: str, clocks: Iterable[ClockKey]) -> None:
        """Users, clocks and outcomes for every event of the batch, in four statements."""
        self._organization_id = organization_id
        self._clock_keys = keys = sorted(set(clocks))
        self._user_ids = sorted({user_id for user_id, _ in keys})
        if keys:
            taken = await self.session.execute(TAKE_CLOCKS[self.dialect], [
                {"organization_id": organization_id, "user_id": user_id, "attribute": attribute}
                for user_id, attribute in keys])
            self.clocks = {(row.user_id, row.attribute): Clock(_aware(row.occurred_at), row.event_id) for row in taken}
        await self._load_users()
        # Only a row tried before can hold outcomes: a first try skips the read.
        tried = [job.id for job in self.jobs if job.tries > 1]
        if tried:
            done = await self.session.execute(OUTCOMES, {"ids": tried})
            self.done.update({(job_id, seq): outcome for job_id, seq, outcome in done})

    async def _load_users(self) -> None:
        self.loaded.clear()
        if self._user_ids:
            result = await self.session.execute(_users_with_admins(), {"org": self._organization_id,
                                                                    "ids": self._user_ids})
            self.loaded.update({user.id: (user, admin) for user, admin in result})

    def forget(self, user_id: str) -> None:
        """The user is read from the database from now on: an event that may create, link or
        delete its admin identity makes the preloaded pair out of date."""
        self.loaded.pop(user_id, None)

    def session_of(self) -> AsyncSession:
        """The session every event's unit of work works in."""
        return self.session

    def unit(self, actor: Actor) -> EventUnitOfWork:
        return EventUnitOfWork(self, actor)

    # --- clocks and outcomes --------------------------------------------------------------------

    def clock(self, key: ClockKey) -> Clock | None:
        return self.clocks.get(key)

    def move_clock(self, key: ClockKey, clock: Clock) -> None:
        self.clocks[key] = clock
        self._moved.add(key)

    def outcome_of(self, job_id: str, seq: int) -> str | None:
        return self.done.get((job_id, seq))

    def keep(self, writes: Writes) -> None:
        self.segment.extend(writes)

    def keep_outcome(self, job_id: str, seq: int, outcome: str) -> None:
        self.segment.outcomes.append({"job_id": job_id, "seq": seq, "organization_id": self._organization_id,
                                      "outcome": outcome, "recorded_at": now()})

    def finish(self, job: ClaimedJob, status: str, *, result: Any = None, error: str | None = None,
               retry_in: float | None = None) -> None:
        at = now()
        self.segment.finished.append({
            "job_id": job.id, "claimed_tries": job.tries, "new_status": status, "new_result": result,
            "new_error": error, "at": at, "retry_at": at + timedelta(seconds=retry_in) if retry_in else None})
        if retry_in is not None:
            self.segment.retries.append((job.function, job.id, retry_in))

    # --- segments -----------------------------------------------------------------------------

    async def begin_segment(self) -> None:
        """The first segment is the batch's transaction itself (nothing to undo before it: an
        undo rolls the transaction back and locks and preloads again), so a batch that undoes
        nothing costs no savepoint; each later one is a savepoint."""
        if self._segments:
            self._savepoint = await self.session.begin_nested()
        self._segments += 1
        self._at_segment = (dict(self.clocks), set(self._moved))

    async def end_segment(self) -> None:
        """The segment's changes stay (until the batch's commit or rollback)."""
        await self.session.flush()
        if self._savepoint is not None:
            await self._savepoint.commit()
            self._savepoint = None
        self.kept.extend(self.segment)
        self.segment = Writes()

    async def undo_segment(self) -> None:
        """Everything the segment's events did is undone, in the database and in memory."""
        self.segment = Writes()
        if self._savepoint is None:  # the first segment: the whole transaction
            await self.session.rollback()
            self.session.expunge_all()
            self.jobs, self._moved = await self._lock_claimed(), set()
            await self.preload(self._organization_id, self._clock_keys)
            return
        await self._savepoint.rollback()
        self._savepoint = None
        self.session.expunge_all()
        self.clocks, self._moved = dict(self._at_segment[0]), set(self._at_segment[1])
        await self._load_users()

    # --- commit ---------------------------------------------------------------------------------

    async def commit(self) -> Writes:
        """Writes what the kept segments wrote, one statement per table, and commits; then hands
        the new jobs to arq and deletes ended sessions' keys. Answers what was written."""
        await self.end_segment()
        kept, session = self.kept, self.session
        for statement, rows in ((INSERT_RECORD, kept.records), (INSERT_MAIL, kept.mails), (INSERT_JOB, kept.jobs),
                                (INSERT_OUTCOME, kept.outcomes), (FINISH, kept.finished)):
            if rows:
                await session.execute(statement, rows)
        moved = [{"org": self._organization_id, "user": user_id, "attr": attribute, "at": clock.occurred_at,
                  "event": clock.event_id}
                 for (user_id, attribute), clock in sorted(self.clocks.items()) if (user_id, attribute) in self._moved]
        if moved:
            await session.execute(MOVE_CLOCK, moved)
        await session.commit()
        await self._after_commit(kept)
        return kept

    async def _after_commit(self, kept: Writes) -> None:
        queue, sessions = self.queue, self.sessions
        try:
            async with asyncio.timeout(REDIS_ANSWER_TIMEOUT):
                if kept.jobs:
                    await queue.enqueue_rows([(row["function"], row["id"]) for row in kept.jobs])
                for function, job_id, seconds in kept.retries:
                    await queue.enqueue(function, job_id, defer_by=seconds)
        except Exception:  # Redis down or stuck: the committed rows are picked up by the reconciler
            log.warning("jobs of a webhook batch committed but not enqueued; the reconciler will enqueue them")
        ended = {(e.identity_type, e.identity_id) for e in kept.ended}
        if not ended:
            return
        try:
            async with asyncio.timeout(REDIS_ANSWER_TIMEOUT):
                await sessions.end_many(sorted(ended))
        except Exception:  # Redis down or stuck: the sessions are over anyway; their keys expire
            log.warning("session keys of %d identities left to expire", len(ended))
