"""One transaction per command: the change, its Directory Insights records and its side-effect
jobs (outbox rows) commit together or not at all. Jobs are handed to arq only after commit.

Sessions a change ends are over when it commits (the identity's auth epoch moves in the same
transaction and every request checks it); their Redis keys are deleted right after commit, as
housekeeping: if Redis fails then, the keys expire after their idle timeout."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from types import TracebackType
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service import insights, notifications
from service.adapters import orm
from service.adapters.crypto import SecretBox
from service.adapters.errors import conflicts_translated, raise_conflict_of
from service.adapters.jobs import JobRows
from service.adapters.queue import REDIS_ANSWER_TIMEOUT, Queue
from service.adapters.repository import (
    Admins,
    ApiKeys,
    DuoEnrollments,
    DuoSettings,
    Factors,
    Groups,
    Integrations,
    Organizations,
    Outbox,
    PushDevices,
    ScimProfiles,
    SshKeys,
    TotpCredentials,
    Users,
    WebauthnCredentials,
)
from service.adapters.sessions import SessionStore
from service.domain.commands import Actor
from service.domain.events import Event, MailRequested, Recorded, SessionsEnded
from service.domain.model import new_id, now

log = logging.getLogger(__name__)

# Built once (the values come at execution): most commands write both.
INSERT_RECORD = orm.insights_events.insert()
INSERT_JOB = orm.jobs.insert()


class UnitOfWork:
    def __init__(
        self, session_factory: Callable[[], AsyncSession], queue: Queue, sessions: SessionStore,
        box: SecretBox, actor: Actor,
    ) -> None:
        self._session_factory = session_factory
        self.queue = queue
        self.sessions = sessions
        self.box = box
        self.actor = actor
        self.events: list[Event] = []
        self._new_jobs: list[tuple[str, str]] = []

    async def __aenter__(self) -> UnitOfWork:
        self.session = self._session_factory()
        self.organizations = Organizations(self.session)
        self.users = Users(self.session)
        self.admins = Admins(self.session)
        self.factors = Factors(self.session)
        self.totp = TotpCredentials(self.session, self.box)
        self.webauthn = WebauthnCredentials(self.session)
        self.push_devices = PushDevices(self.session)
        self.duo = DuoEnrollments(self.session)
        self.duo_settings = DuoSettings(self.session)
        self.api_keys = ApiKeys(self.session)
        self.ssh_keys = SshKeys(self.session)
        self.integrations = Integrations(self.session)
        self.scim_profiles = ScimProfiles(self.session)
        self.groups = Groups(self.session)
        self.outbox = Outbox(self.session)
        self.events = []
        self._new_jobs = []
        self.jobs = JobRows(self.session)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # close() rolls back whatever was not committed and leaves loaded objects readable.
        await self.session.close()
        raise_conflict_of(exc)  # a collision met anywhere in the unit of work (an autoflush, an insert)

    async def flush(self) -> None:
        with conflicts_translated():
            await self.session.flush()

    def collect(self, *events: Event) -> None:
        self.events.extend(events)

    async def commit(self) -> None:
        events = self.events
        await self._write_events()
        with conflicts_translated():
            await self.session.commit()
        self.events = []
        await self._enqueue_committed_jobs()
        await self._delete_session_keys([e for e in events if isinstance(e, SessionsEnded)])

    async def _write_events(self) -> None:
        at = now()
        for event in self.events:
            if isinstance(event, Recorded):
                await self._record(event, at)
            elif isinstance(event, MailRequested):
                subject, body = notifications.render(event.template, event.context)
                mail_id = await self.outbox.add(self.actor.organization_id, event.recipient, subject, body)
                await self.add_job("send_email", {"mail_id": mail_id})

    async def _record(self, event: Recorded, at: object) -> None:
        await self.session.execute(INSERT_RECORD, self.record_row(event, at))

    def record_row(self, event: Recorded, at: object) -> dict[str, Any]:
        """The Directory Insights row of an event, as ``INSERT_RECORD`` takes it."""
        event_id = new_id()
        body = insights.record_body(event_id, event, self.actor, at)  # type: ignore[arg-type]
        return {
            "id": event_id,
            "organization_id": self.actor.organization_id,
            "event_type": event.event_type,
            "service": body["service"],
            "timestamp": at,
            "success": event.success,
            "initiated_by_administrator": bool(body["initiated_by"].get("administrator")),
            "target_resource_type": (body.get("target_resource") or {}).get("type"),
            "body": body,
        }

    async def add_job(self, function: str, args: dict[str, str], idempotency_key: str | None = None) -> str:
        """A job row in this transaction; arq gets it after commit (or from the reconciler)."""
        row = self.job_row(function, args, idempotency_key)
        await self.session.execute(INSERT_JOB, row)
        self._new_jobs.append((function, row["id"]))
        return str(row["id"])

    def job_row(self, function: str, args: dict[str, str], idempotency_key: str | None = None) -> dict[str, Any]:
        job_id = new_id()
        return {"id": job_id, "organization_id": self.actor.organization_id,
                "idempotency_key": idempotency_key or job_id, "function": function, "args": args,
                "status": "queued", "created_at": now()}

    async def _enqueue_committed_jobs(self) -> None:
        jobs, self._new_jobs = self._new_jobs, []
        if not jobs:
            return
        try:
            async with asyncio.timeout(REDIS_ANSWER_TIMEOUT):
                await self.queue.enqueue_rows(jobs)
        except Exception:  # Redis down or stuck: the committed rows are picked up by the reconciler
            log.warning("jobs %s committed but not enqueued; the reconciler will enqueue them",
                        [job_id for _, job_id in jobs])

    async def _delete_session_keys(self, ended: list[SessionsEnded]) -> None:
        """Session keys of the identities whose sessions the change ended (SessionsEnded events)."""
        for event in ended:
            try:
                async with asyncio.timeout(REDIS_ANSWER_TIMEOUT):
                    await self.sessions.end_all(event.identity_type, event.identity_id)
            except Exception:  # Redis down or stuck: the sessions are over anyway; their keys expire
                log.warning("session keys of %s %s left to expire", event.identity_type, event.identity_id)
