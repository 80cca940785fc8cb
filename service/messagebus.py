"""The message bus: runs a command's handler in a fresh unit of work.

A refusal that must leave a trace (a permission denial, the last Administrator with Billing)
is rolled back with everything else, then recorded in its own transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from service.adapters.errors import StoreConflict
from service.domain.commands import Actor, Command
from service.domain.errors import Conflict, DomainError
from service.handlers.common import Handler
from service.unit_of_work import UnitOfWork

UnitOfWorkFactory = Callable[[Actor], UnitOfWork]
HandlerTable = Mapping[type[Command], Handler]  # built by bootstrap, which knows every feature


class MessageBus:
    def __init__(self, uow_factory: UnitOfWorkFactory, handlers: HandlerTable) -> None:
        self.uow_factory = uow_factory
        self.handlers = handlers

    async def handle(self, command: Command) -> Any:
        handler = self.handlers[type(command)]
        try:
            async with self.uow_factory(command.actor) as uow:
                return await handler(command, uow)
        except DomainError as refusal:
            if refusal.record is not None:
                await self._record_refusal(command.actor, refusal)
            raise
        except StoreConflict as exc:
            # A concurrent request took the same email, username or link first.
            raise Conflict("conflict", "a concurrent change collided with this one; retry") from exc

    async def _record_refusal(self, actor: Actor, refusal: DomainError) -> None:
        assert refusal.record is not None
        async with self.uow_factory(actor) as uow:
            uow.collect(refusal.record, *refusal.notices)
            await uow.commit()
