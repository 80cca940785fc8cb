"""Webhook deliveries recorded and queued in batches (group commit).

A delivery is answered 202 only once its job row is committed and arq holds the job. One by one,
that costs each delivery a transaction (four round trips to PostgreSQL) and an arq enqueue (three
round trips to Redis). Here, deliveries that arrive while a batch is being written wait for the
next batch, which takes them all: users looked up by email in one query, the rows inserted in one
statement, and one round trip to Redis for the whole batch. Under light load a batch is a single
delivery, written at once: nothing waits for a timer. The statements are the adapters' business
(``adapters.webhook_intake.DeliveryStore``: on PostgreSQL, asyncpg itself where it can be).

Each delivery still gets its own answer: its job (new or recorded before), 422 for an unknown
subject, or 503 if the database or Redis cannot take it.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from service import inbound, metrics
from service.adapters.queue import REDIS_ANSWER_TIMEOUT
from service.adapters.webhook_intake import DATABASE_DOWN, Collision, DeliveryWrites
from service.bootstrap import Services
from service.deliveries import Delivery
from service.domain.model import new_id, normalise_email, now
from service.logging import log_error

log = logging.getLogger(__name__)

MAX_BATCH = 256
WRITERS = 2

Outcome = tuple[str, bool, str] | Exception  # (job id, recorded before, status), or why not taken


@dataclass
class Pending:
    integration: inbound.Integration
    delivery: Delivery
    key: str
    answer: asyncio.Future[inbound.Accepted]

    def settle(self, outcome: Outcome) -> None:
        if self.answer.done():  # the sender hung up meanwhile; its row stays, its retry finds it
            return
        if isinstance(outcome, Exception):
            self.answer.set_exception(outcome)
        else:
            self.answer.set_result(inbound.Accepted(outcome[0], outcome[1]))


class Intake:
    """One per web process: the deliveries waiting for the next batch, and the tasks writing
    batches. WRITERS of them at once, so the process parses and answers deliveries while a batch
    waits for PostgreSQL and Redis, instead of idling."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self._waiting: list[Pending] = []
        self._writers: set[asyncio.Task[None]] = set()

    async def accept(self, integration: inbound.Integration, delivery: Delivery, key: str) -> inbound.Accepted:
        pending = Pending(integration, delivery, key, asyncio.get_running_loop().create_future())
        self._waiting.append(pending)
        if len(self._writers) < WRITERS:
            writer = asyncio.create_task(self._write_waiting())
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        return await pending.answer

    async def _write_waiting(self) -> None:
        while self._waiting:
            batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
            metrics.WEBHOOK_BATCH_DELIVERIES.observe(len(batch))
            try:
                await self._write(batch)
            except Exception as exc:  # never leave a sender waiting
                log_error(log, exc, "webhook batch of %d deliveries failed", len(batch))
                for pending in batch:
                    pending.settle(exc)

    async def _write(self, batch: list[Pending]) -> None:
        try:
            outcomes = await self._record(batch)
        except Collision:  # an employee-id link learned concurrently: each on its own
            outcomes = {}
            for pending in batch:
                outcomes.update(await self._record_alone(pending))
        except DATABASE_DOWN:
            log.warning("%d webhook deliveries not recorded: the database is unavailable", len(batch))
            outcomes = {p.key: inbound.Unavailable("the database is unavailable") for p in batch}
        await self._wake_drains(batch, outcomes)
        answered: set[str] = set()
        for pending in batch:
            outcome = outcomes[pending.key]
            if pending.key in answered and not isinstance(outcome, Exception):
                outcome = (outcome[0], True, outcome[2])  # the same event twice in one batch: a replay
            answered.add(pending.key)
            pending.settle(outcome)

    async def _record_alone(self, pending: Pending) -> dict[str, Outcome]:
        """A batch of one; a second try finds the link a concurrent delivery taught meanwhile."""
        for attempt in range(2):
            try:
                return await self._record([pending])
            except Collision:
                if attempt:
                    break
            except DATABASE_DOWN:
                break
        return {pending.key: inbound.Unavailable("the database is unavailable")}

    async def _record(self, batch: list[Pending]) -> dict[str, Outcome]:
        return await self.services.deliveries.write(lambda writes: _record_batch(writes, batch))

    async def _wake_drains(self, batch: list[Pending], outcomes: dict[str, Outcome]) -> None:
        """Wakes the drain job of each integration with queued jobs, again for a replay (its first
        wake-up may have failed)."""
        queued = {key for key, o in outcomes.items() if not isinstance(o, Exception) and o[2] == "queued"}
        if not queued:
            return
        drains = sorted({inbound.drain_job(p.integration) for p in batch if p.key in queued})
        try:
            async with asyncio.timeout(REDIS_ANSWER_TIMEOUT):
                await self.services.queue.wake(inbound.DRAIN_FUNCTION, drains)
        except Exception as exc:  # Redis down or stuck: the rows are safe, the reconciler enqueues them
            log.warning("%d webhook jobs recorded but not enqueued: %s", len(queued), type(exc).__name__)
            for key in queued:
                outcomes[key] = inbound.Unavailable("the queue is unavailable")


async def _record_batch(writes: DeliveryWrites, batch: list[Pending]) -> dict[str, Outcome]:
    """Each delivery's job row; a key that comes twice is recorded once."""
    outcomes: dict[str, Outcome] = {}
    rows: list[dict[str, Any]] = []
    seen_keys: set[str] = set()
    known = await writes.users_by_email(_wanted_emails(batch))
    for pending in batch:
        if pending.key in seen_keys:
            continue
        seen_keys.add(pending.key)
        try:
            events = await inbound.resolve_events(writes, pending.integration, pending.delivery, known)
        except inbound.Unprocessable as refused:
            outcomes[pending.key] = refused
            continue
        rows.append(_job_row(pending, events))
    inserted = await writes.insert(rows) if rows else set()
    outcomes.update({r["idempotency_key"]: (r["id"], False, "queued") for r in rows
                     if r["idempotency_key"] in inserted})
    # Recorded before: a key already taken, or an event whose user is gone since.
    again = [r["idempotency_key"] for r in rows if r["idempotency_key"] not in inserted]
    again += [key for key, outcome in outcomes.items() if isinstance(outcome, inbound.UnknownSubject)]
    if again:
        outcomes.update({key: (job_id, True, status) for key, job_id, status in await writes.recorded(again)})
    return outcomes


def _job_row(pending: Pending, events: list[dict[str, Any]]) -> dict[str, Any]:
    integration = pending.integration
    return {"id": new_id(), "organization_id": integration.organization_id, "idempotency_key": pending.key,
            "function": inbound.APPLY_FUNCTION, "args": {"integration_id": integration.id, "events": events},
            "status": "queued", "created_at": now()}


def _wanted_emails(batch: list[Pending]) -> set[tuple[str, str]]:
    return {(p.integration.organization_id, normalise_email(e.subject.email))
            for p in batch for e in p.delivery.events if e.subject.email}
