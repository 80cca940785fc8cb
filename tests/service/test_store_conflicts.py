"""A write that collides with a stored row (a concurrent request's, most often) reaches the
service layer as the adapters' ``StoreConflict``, never as the driver's error: the message bus
answers it with the ``conflict`` refusal, sign-in enrollment with its own code."""

from __future__ import annotations

import pytest

from service.adapters.errors import StoreConflict
from service.bootstrap import Services
from service.domain import commands as c
from service.domain.errors import Conflict
from service.domain.model import Role, User
from service.messagebus import MessageBus
from service.unit_of_work import UnitOfWork
from tests.conftest import Org


def _actor(org: Org) -> c.Actor:
    return c.Actor(org.id, org.admin_id, "admin", Role.BILLING)


async def test_a_flush_that_collides_raises_store_conflict(services: Services, org: Org) -> None:
    async with services.uow(_actor(org)) as uow:
        uow.users.add(User(org.id, "pat@acme.test", "pat"))
        await uow.flush()
        uow.users.add(User(org.id, "PAT@acme.test", "pat2"))
        with pytest.raises(StoreConflict):
            await uow.flush()


async def test_a_colliding_row_insert_raises_store_conflict(services: Services, org: Org) -> None:
    async with services.uow(_actor(org)) as uow:
        user = User(org.id, "sam@acme.test", "sam")
        uow.users.add(user)
        await uow.flush()
        await uow.totp.add(org.id, user.id, "sealed", 0)
        with pytest.raises(StoreConflict):
            await uow.totp.add(org.id, user.id, "sealed", 1)


async def test_the_bus_answers_a_collision_anywhere_in_the_unit_of_work_with_conflict(
        services: Services, org: Org) -> None:
    async def twice(command: c.Command, uow: UnitOfWork) -> None:
        # No translation at this statement: the unit of work's end names the collision.
        await uow.add_job("send_email", {"mail_id": "m"}, idempotency_key=f"once-{org.id}")
        await uow.add_job("send_email", {"mail_id": "m"}, idempotency_key=f"once-{org.id}")

    bus = MessageBus(services.uow, {c.SuspendUser: twice})
    with pytest.raises(Conflict) as refusal:
        await bus.handle(c.SuspendUser(_actor(org), "nobody"))
    assert refusal.value.code == "conflict"
    assert isinstance(refusal.value.__cause__, StoreConflict)
