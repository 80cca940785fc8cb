"""Runs a piece of sign-in work in a unit of work, as the message bus runs a handler: a refusal
that must leave a trace is rolled back with everything else, then recorded on its own."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from service.bootstrap import Services
from service.domain.commands import Actor
from service.domain.errors import DomainError
from service.unit_of_work import UnitOfWork

T = TypeVar("T")


async def run(services: Services, actor: Actor, work: Callable[[UnitOfWork], Awaitable[T]]) -> T:
    try:
        async with services.uow(actor) as uow:
            return await work(uow)
    except DomainError as refusal:
        if refusal.record is not None:
            async with services.uow(actor) as uow:
                uow.collect(refusal.record, *refusal.notices)
                await uow.commit()
        raise
