"""The composition root: wires adapters for production, for the embedded default and for tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import fakeredis
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service import integrations, provisioning
from service.adapters import db
from service.adapters.api_keys import ApiKeyHolders
from service.adapters.crypto import SecretBox
from service.adapters.direct import Direct, open_direct
from service.adapters.idempotency import IdempotencyKeys
from service.adapters.insights_store import InsightsStore
from service.adapters.jobs import ClaimedJob, JobStore, job_store
from service.adapters.mail import Mailer, OutboxOnly, SmtpMailer
from service.adapters.orm import start_mappers
from service.adapters.outbox import MailOutbox
from service.adapters.queue import Queue, embedded_pool, redis_pool
from service.adapters.read_only import ReadOnlyUnitOfWork
from service.adapters.retention import Retention
from service.adapters.scim_directory import Directory, scim_integration
from service.adapters.sessions import SessionStore
from service.adapters.unit_of_work import UnitOfWork
from service.adapters.webhook_batch import WebhookBatch
from service.adapters.webhook_intake import DeliveryStore, IntegrationCache
from service.config import Settings
from service.domain.commands import Actor
from service.handlers import admins, keys, mfa, organizations, users
from service.messagebus import HandlerTable, MessageBus, UnitOfWorkFactory
from service.ops import handlers as ops_handlers


def handler_table() -> HandlerTable:
    """Every command's handler, feature by feature."""
    return {**users.HANDLERS, **mfa.HANDLERS, **keys.HANDLERS, **admins.HANDLERS, **organizations.HANDLERS,
            **integrations.HANDLERS, **provisioning.HANDLERS,
            **ops_handlers.HANDLERS}


HANDLERS = handler_table()


@dataclass
class Services:
    settings: Settings
    engine: AsyncEngine
    single_statements: AsyncEngine  # the same pool, for one-statement work (db.single_statements)
    session_factory: async_sessionmaker[AsyncSession]
    redis: ArqRedis
    queue: Queue
    box: SecretBox
    sessions: SessionStore
    mailer: Mailer
    jobs: JobStore
    deliveries: DeliveryStore  # the webhook receiver's reads and writes (adapters.webhook_intake)
    outbox: MailOutbox  # the send-email job's lock, send and mark (adapters.outbox)
    retention: Retention  # the retention cron jobs' deletes (adapters.retention)
    idempotency_keys: IdempotencyKeys  # the Idempotency-Key store (adapters.idempotency)
    api_key_holders: ApiKeyHolders  # who holds an x-api-key (adapters.api_keys)
    insights: InsightsStore  # Directory Insights queries (adapters.insights_store)
    # Integrations as this process's receivers last read them (a few seconds).
    integrations_seen: IntegrationCache = field(default_factory=IntegrationCache)
    # asyncpg itself on PostgreSQL (adapters.direct), closed with the services; only adapters use it.
    direct: Direct | None = None

    def uow(self, actor: Actor) -> UnitOfWork:
        return UnitOfWork(self.session_factory, self.queue, self.sessions, self.box, actor)

    def webhook_batch(self, jobs: list[ClaimedJob]) -> WebhookBatch:
        """The unit of work that applies claimed webhook events in one transaction."""
        return WebhookBatch(self.session_factory, self.queue, self.sessions, self.box, jobs)

    @asynccontextmanager
    async def scim_directory(self, org_id: str) -> AsyncIterator[Directory]:
        """What SCIM reads of one organization's users and groups, on a session of its own."""
        async with self.session_factory() as session:
            yield Directory(session, org_id)

    async def scim_integration(self, token_digest: str) -> Any | None:
        return await scim_integration(self.session_factory, token_digest)

    def read_only(self) -> ReadOnlyUnitOfWork:
        """Reads outside any command (sign-in, pages): nothing to commit, no actor."""
        return ReadOnlyUnitOfWork(self.session_factory)

    @property
    def bus(self) -> MessageBus:
        return self.bus_for(self.uow)

    def bus_for(self, uow_factory: UnitOfWorkFactory) -> MessageBus:
        """The message bus on units of work of one's own (the webhook worker's, per event)."""
        return MessageBus(uow_factory, HANDLERS)

    async def close(self) -> None:
        await self.redis.aclose()
        if self.direct is not None:
            await self.direct.close()
        await self.engine.dispose()


async def build(settings: Settings, *, migrate: bool = False, redis: ArqRedis | None = None) -> Services:
    start_mappers()
    engine = db.make_engine(settings.database_url)
    if migrate:
        await db.upgrade(engine)
    if redis is None:
        if settings.redis_url is None:
            redis = embedded_pool(fakeredis.FakeServer(), settings.queue_name)
        else:
            redis = await redis_pool(settings.redis_url, settings.queue_name)
    session_factory = db.session_factory(engine)
    single_statements = db.single_statements(engine)
    queue = Queue(redis, settings.queue_name)
    direct = await open_direct(settings.database_url)
    box = SecretBox(settings.secret_key)
    return Services(
        settings=settings,
        engine=engine,
        single_statements=single_statements,
        session_factory=session_factory,
        redis=redis,
        queue=queue,
        box=box,
        sessions=SessionStore(redis, settings.session_idle_seconds),
        mailer=SmtpMailer(settings.smtp_url) if settings.smtp_url else OutboxOnly(),
        jobs=job_store(single_statements, direct),
        deliveries=DeliveryStore(engine, single_statements, direct),
        outbox=MailOutbox(engine),
        retention=Retention(engine),
        idempotency_keys=IdempotencyKeys(session_factory),
        api_key_holders=ApiKeyHolders(single_statements),
        insights=InsightsStore(session_factory),
        direct=direct,
    )
