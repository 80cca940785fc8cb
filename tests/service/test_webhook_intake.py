"""Deliveries that arrive together are recorded and queued together (service/intake.py), and each
still gets its own answer: its own job, the same job for the same event, 422 for an unknown
subject, 503 for all when Redis cannot take them."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import sqlalchemy as sa

from service import inbound, metrics
from service.adapters import orm
from service.app import create_app
from service.bootstrap import Services
from tests.conftest import Api, Org
from tests.service.test_webhook_events import without_redis
from tests.service.test_webhook_support import (  # clean_jobs: an autouse fixture
    clean_jobs,  # noqa: F401
    event,
    jobs_of,
    sender,
)


@pytest.mark.parametrize("with_unknown", [False, True], ids=["all-known", "one-unknown"])
async def test_deliveries_arriving_together_each_get_their_own_answer(api: Api, services: Services, org: Org,
                                                                       with_unknown: bool) -> None:
    """On PostgreSQL a batch whose subjects the batch's lookup all finds is written on asyncpg
    itself (adapters.direct); one unknown subject sends it through a SQLAlchemy transaction.
    The answers are the same either way."""
    users = [await api.user(mfa=False) for _ in range(30)]
    hr = await sender(api, "hr")
    twice = event("employee.suspended", email=users[0]["email"])
    payloads = [event("employee.suspended", email=u["email"].upper()) for u in users[1:]]
    sends = [hr.send(p) for p in payloads] + [hr.send(twice), hr.send(twice)]
    if with_unknown:
        sends.append(hr.send(event("employee.suspended", email="nobody@acme.test")))
    batches_before, in_batches_before = batch_metrics()
    answers = await asyncio.gather(*sends)
    batches, in_batches = batch_metrics()
    assert 1 <= batches - batches_before < len(sends)  # written together, in fewer batches than deliveries
    assert in_batches - in_batches_before == len(sends)

    if with_unknown:
        *answers, unknown = answers
        assert (unknown[0], unknown[1]["error"]["code"]) == (422, "unknown_subject")
    *distinct, first, second = answers
    assert {status for status, _, _ in distinct} == {202}
    assert len({body["job_id"] for _, body, _ in distinct}) == len(payloads)
    assert (first[0], second[0], first[1]["job_id"]) == (202, 202, second[1]["job_id"])
    assert sorted([first[2].get("Idempotent-Replayed"), second[2].get("Idempotent-Replayed")], key=str) \
        == [None, "true"]

    rows = {r.id: r for r in await jobs_of(services, org.id) if r.function == "apply_webhook"}
    assert set(rows) == {body["job_id"] for _, body, _ in distinct} | {first[1]["job_id"]}
    by_email = {u["email"]: u["id"] for u in users}
    for (_, body, _), payload in zip(distinct, payloads, strict=True):
        [applied] = rows[body["job_id"]].args["events"]
        assert applied["user_id"] == by_email[payload["subject"]["email"].lower()]
    # every recorded job is in arq's hands: its integration's drain job is queued
    drain_id = f"{inbound.DRAIN_PREFIX}{org.id}:{hr.id}"
    assert rows and await services.redis.zscore(services.settings.queue_name, drain_id) is not None


def batch_metrics() -> tuple[float, float]:
    """Batches written so far by this process's receivers, and the deliveries in them."""
    def value(name: str) -> float:
        return metrics.REGISTRY.get_sample_value(name) or 0.0
    return value("adminlink_webhook_batch_deliveries_count"), value("adminlink_webhook_batch_deliveries_sum")


async def test_redis_down_answers_every_delivery_of_a_batch_503(api: Api, services: Services, org: Org,
                                                                aiohttp_client: Any) -> None:
    users = [await api.user(mfa=False) for _ in range(5)]
    hr = await sender(api, "hr")
    down = await aiohttp_client(create_app(without_redis(services)))
    hr_down = type(hr)(down, "hr", {"id": hr.id, "secret": hr.secret})
    answers = await asyncio.gather(*(hr_down.send(event("employee.terminated", email=u["email"])) for u in users))
    assert [(status, body["error"]["code"], headers["Retry-After"]) for status, body, headers in answers] \
        == [(503, "temporarily_unavailable", "30")] * len(users)
    # Recorded all the same: the reconciler hands them to arq once Redis is back.
    assert len([r for r in await jobs_of(services, org.id) if r.function == "apply_webhook"]) == len(users)


async def test_two_receivers_learning_the_same_employee_id_both_answer(api: Api, services: Services, org: Org,
                                                                       aiohttp_client: Any) -> None:
    """Two web processes (two intakes) take a first delivery for the same new employee id at once:
    one teaches the link; the other's insert of it collides, and it records its delivery again on
    its own, finding the link."""
    user = await api.user(mfa=False)
    hr = await sender(api, "hr")
    other = type(hr)(await aiohttp_client(create_app(services)), "hr", {"id": hr.id, "secret": hr.secret})
    payloads = [event("employee.suspended", email=user["email"], employee_id="E-77") for _ in range(2)]
    answers = await asyncio.gather(hr.send(payloads[0]), other.send(payloads[1]))
    assert [status for status, _, _ in answers] == [202, 202], answers
    assert answers[0][1]["job_id"] != answers[1][1]["job_id"]
    async with services.session_factory() as session:
        links = (await session.execute(sa.select(orm.employee_links.c.user_id).where(
            orm.employee_links.c.integration_id == hr.id))).scalars().all()
    assert links == [user["id"]]
