"""The Idempotency-Key store (adapters.idempotency): of concurrent requests with one key exactly one
reserves it, the others are shown the first; an expired key is taken over by exactly one."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import sqlalchemy as sa

from service.adapters import orm
from service.bootstrap import Services
from service.domain.model import new_id, now


async def test_one_of_concurrent_requests_reserves_a_key_and_the_others_see_it_running(services: Services) -> None:
    store, org, key = services.idempotency_keys, new_id(), "key-" + new_id()
    seen = await asyncio.gather(*(store.reserve(org, key, "first") for _ in range(4)))
    assert sum(s is None for s in seen) == 1, seen
    assert all(s.status_code is None and s.request_fingerprint == "first" for s in seen if s is not None)
    await store.remember(org, key, 201, "sealed answer")
    replay = await store.reserve(org, key, "another")
    assert replay is not None
    assert (replay.request_fingerprint, replay.status_code, replay.response) == ("first", 201, "sealed answer")
    assert await store.reserve(new_id(), key, "another") is None  # the same key in another organization


async def test_an_expired_key_is_taken_over_once_and_a_forgotten_one_is_free(services: Services) -> None:
    store, org, key = services.idempotency_keys, new_id(), "key-" + new_id()
    assert await store.reserve(org, key, "first") is None
    await store.remember(org, key, 200, None)
    table = orm.idempotency_keys
    async with services.session_factory() as session, session.begin():
        await session.execute(sa.update(table).where(table.c.organization_id == org, table.c.key == key)
                              .values(created_at=now() - timedelta(days=2)))
    seen = await asyncio.gather(*(store.reserve(org, key, "retry") for _ in range(3)))
    assert sum(s is None for s in seen) == 1, seen
    await store.forget(org, key)
    assert await store.reserve(org, key, "again") is None
