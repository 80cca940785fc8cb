"""Webhooks under faults, with real processes: ``adminlink web`` and ``adminlink worker`` on
PostgreSQL, a redis-server of the test's own (so it can be stopped and started again), and a
real SMTP server.

- A worker killed with SIGKILL in the middle of a stream of events, then started again: every
  event is applied exactly once and no email is sent twice.
- Redis stopped during a stream: the receiver answers 503 with Retry-After; once Redis is back,
  every event that was recorded is applied, whether or not its sender delivered it again.
- Two workers (and a third drain) on one integration's batches at once: every event once.

Events are applied in batches (ARCHITECTURE.md, "Many events, one transaction"): the SIGKILL lands
while the worker holds a claimed batch (rows in progress), whose rows are claimed again once the
claim lapses.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import sqlalchemy as sa

from service import config, inbound
from service.adapters import orm
from service.bootstrap import Services, build
from service.domain.model import Role, new_id
from tests.conftest import TEST_DATABASE_URL, Api, Mailbox, bootstrap_org, free_port
from tests.service.test_webhook_support import event, minutes_ago, standard_headers

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not TEST_DATABASE_URL, reason="the webhook fault tests need ADMINLINK_TEST_DATABASE_URL "
                                                     "(PostgreSQL shared by separate web and worker processes)"),
]

ROOT = Path(__file__).resolve().parents[2]
SETTLED = ("complete", "stale", "denied", "dead")


class RedisServer:
    """A redis-server of this test's own, without persistence: stopped, it forgets everything."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server is not installed (CI installs it; apt-get install redis-server)")
        self.binary = binary
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(  # noqa: S603 (a fixed local binary and arguments)
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def wait_for_port(port: int, within: float = 20.0) -> None:
    import socket

    deadline = time.monotonic() + within
    while True:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listens on {port}")
        time.sleep(0.05)


class Stack:
    """The web process, worker processes and the settings they share."""

    def __init__(self, tmp: Path, database_url: str, redis: RedisServer, smtp_url: str) -> None:
        self.tmp = tmp
        self.redis = redis
        self.port = free_port()
        self.env = {
            **os.environ,
            "ADMINLINK_DATABASE_URL": database_url,
            "ADMINLINK_REDIS_URL": redis.url,
            "ADMINLINK_SMTP_URL": smtp_url,
            "ADMINLINK_SECRET_KEY": "fault-test-secret-key-" + "k" * 32,
            "ADMINLINK_DATA_DIR": str(tmp / "data"),
            "ADMINLINK_PORT": str(self.port),
            "ADMINLINK_COOKIE_SECURE": "false",
            "ADMINLINK_JOB_POLL_DELAY": "0.05",
            # A killed worker's job runs again once arq's in-progress mark expires: timeout + 10 s.
            "ADMINLINK_JOB_TIMEOUT": "5",
            "ADMINLINK_WEBHOOK_RETRY_AFTER": "1",
            "ADMINLINK_LOG_LEVEL": "WARNING",
        }
        self.processes: list[subprocess.Popen[bytes]] = []
        self.web: subprocess.Popen[bytes] | None = None
        self.worker: subprocess.Popen[bytes] | None = None

    def settings(self) -> config.Settings:
        return config.load({k: v for k, v in self.env.items() if k.startswith("ADMINLINK_")})

    def _spawn(self, command: str) -> subprocess.Popen[bytes]:
        log = (self.tmp / f"{command}-{len(self.processes)}.log").open("wb")
        process = subprocess.Popen([sys.executable, "-m", "service.cli", command],  # noqa: S603
                                   cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
        self.processes.append(process)
        return process

    def start_web(self) -> None:
        self.web = self._spawn("web")
        wait_for_port(self.port)

    def start_worker(self) -> None:
        self.worker = self._spawn("worker")

    def kill_worker(self) -> None:
        assert self.worker is not None
        self.worker.send_signal(signal.SIGKILL)
        self.worker.wait(10)

    def worker_alive(self) -> bool:
        return self.worker is not None and self.worker.poll() is None

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()

    def logs(self) -> str:
        return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.tmp.glob("*.log")))


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.kill()


@pytest.fixture
def stack(tmp_path: Path, database_url: str, redis_server: RedisServer,
          smtp_server: tuple[str, Mailbox]) -> Iterator[Stack]:
    running = Stack(tmp_path, database_url, redis_server, smtp_server[0])
    running.start_web()
    running.start_worker()
    yield running
    running.stop()


@pytest.fixture
async def observer(stack: Stack) -> AsyncIterator[Services]:
    """This test's own view of the database (and of Redis, for bootstrapping only)."""
    services = await build(stack.settings())
    yield services
    await services.close()


@pytest.fixture
async def http(stack: Stack) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{stack.port}") as session:
        yield session


class Delivery:
    """One event as its sender keeps it: the same body and message id on every attempt."""

    def __init__(self, path: str, secret: str, payload: dict[str, Any]) -> None:
        self.path, self.secret = path, secret
        self.body = json.dumps(payload).encode()
        self.message_id = f"msg_{new_id()}"
        self.answers: list[int] = []
        self.job_id: str | None = None

    async def send(self, http: aiohttp.ClientSession) -> int:
        headers = standard_headers(self.secret, self.body, message_id=self.message_id)
        async with http.post(self.path, data=self.body, headers=headers) as response:
            answer = await response.json()
            self.answers.append(response.status)
            if response.status == 202:
                self.job_id = answer["job_id"]
            elif response.status == 503:
                assert int(response.headers["Retry-After"]) >= 1
            return response.status


async def apply_jobs(observer: Services, org_id: str) -> list[Any]:
    table = orm.jobs
    async with observer.session_factory() as session:
        return list(await session.execute(sa.select(table).where(
            table.c.organization_id == org_id, table.c.function == "apply_webhook")))


async def all_jobs(observer: Services, org_id: str) -> list[Any]:
    async with observer.session_factory() as session:
        return list(await session.execute(sa.select(orm.jobs).where(orm.jobs.c.organization_id == org_id)))


async def until_settled(observer: Services, org_id: str, expected: int, stack: Stack, within: float) -> list[Any]:
    """Every job of the organization finished (webhook jobs and the email and session jobs
    they made), with ``expected`` webhook jobs among them."""
    deadline = time.monotonic() + within
    while True:
        rows = await all_jobs(observer, org_id)
        webhook_rows = [r for r in rows if r.function == "apply_webhook"]
        if len(webhook_rows) == expected and all(r.status in SETTLED for r in rows):
            return webhook_rows
        if time.monotonic() > deadline:
            pending = Counter(r.status for r in rows)
            pytest.fail(f"jobs not settled in {within} s: {dict(pending)} ({len(webhook_rows)} webhook jobs, "
                        f"{expected} expected)\n{stack.logs()}")
        if not stack.worker_alive():  # a supervisor restarts a worker that stopped
            stack.start_worker()
        await asyncio.sleep(0.25)


async def records(observer: Services, org_id: str, event_type: str) -> list[dict[str, Any]]:
    table = orm.insights_events
    async with observer.session_factory() as session:
        rows = await session.execute(sa.select(table.c.body).where(
            table.c.organization_id == org_id, table.c.event_type == event_type))
        return [r.body for r in rows]


async def integration(api: Api, kind: str) -> dict[str, Any]:
    return dict(await api.ok("POST", "/api/v1/integrations", {"kind": kind, "name": f"{kind} {new_id()[:6]}",
                                                               "role": Role.BILLING.value}))


async def send_stream(http: aiohttp.ClientSession, deliveries: list[Delivery], in_flight: int = 6) -> None:
    gate = asyncio.Semaphore(in_flight)

    async def one(delivery: Delivery) -> None:
        async with gate:
            await delivery.send(http)

    await asyncio.gather(*(one(d) for d in deliveries))


class Kill:
    """What a SIGKILL interrupted: webhook jobs, and the outbox ids of emails being sent."""

    def __init__(self, webhook_jobs: set[str], mails: set[str]) -> None:
        self.webhook_jobs, self.mails = webhook_jobs, mails


async def kill_worker_mid_job(stack: Stack, observer: Services, org_id: str, after_complete: int) -> Kill:
    """SIGKILLs the worker at a moment when it is running webhook jobs.

    It aims at a moment when no email is being handed to the SMTP server: SMTP has no way to take
    a message and mark it sent at once, so a worker killed between the server's "250 OK" and the
    outbox update (a window of one database round trip) sends that one email again on its
    rerun, with the same Message-ID (documented in docs/webhooks.md). A mail job can still start
    between the last look and the kill; the jobs read after the kill say which were cut."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        rows = await all_jobs(observer, org_id)
        running = {r.id for r in rows if r.status == "in_progress" and r.function == "apply_webhook"}
        sending = any(r.status == "in_progress" and r.function == "send_email" for r in rows)
        done = sum(r.status == "complete" and r.function == "apply_webhook" for r in rows)
        if running and not sending and done >= after_complete:
            stack.kill_worker()
            cut = [r for r in await all_jobs(observer, org_id) if r.status == "in_progress"]
            still = {r.id for r in cut if r.function == "apply_webhook"}
            if still:
                return Kill(still, {r.args["mail_id"] for r in cut if r.function == "send_email"})
            stack.start_worker()  # they finished just before the kill: try again
        await asyncio.sleep(0.005)
    pytest.fail(f"never saw the worker running a webhook job\n{stack.logs()}")


async def test_worker_killed_mid_stream_applies_every_event_once(
        stack: Stack, observer: Services, http: aiohttp.ClientSession, smtp_server: tuple[str, Mailbox]) -> None:
    org = await bootstrap_org(observer, "Fault Co")
    api = Api(http, org.key, observer)  # type: ignore[arg-type]  (a ClientSession has the test client's request())
    # Two groups, so that no event of the stream depends on another one's turn: admin roles
    # given (each with its email) to the first, suspensions and late activations to the second.
    admins = [await api.user() for _ in range(25)]
    suspended = [await api.user(mfa=False) for _ in range(25)]
    directory = await integration(api, "directory")
    path = f"/webhooks/directory/{directory['id']}"
    stream: list[Delivery] = []
    for admin, user in zip(admins, suspended, strict=True):
        stream.append(Delivery(path, directory["secret"], event("admin_role.assigned", email=admin["email"],
                                                                 data={"role": "Manager"})))
        stream.append(Delivery(path, directory["secret"], event("user.suspended", email=user["email"],
                                                                 at=minutes_ago(1))))
        # Sent after the suspension but older than it: never reactivates.
        stream.append(Delivery(path, directory["secret"], event("user.activated", email=user["email"],
                                                                 at=minutes_ago(2))))
    sending = asyncio.create_task(send_stream(http, stream + stream[::5]))  # some delivered twice
    kill = await kill_worker_mid_job(stack, observer, org.id, after_complete=5)
    await asyncio.sleep(0.5)
    stack.start_worker()
    await sending
    assert all(d.answers and set(d.answers) == {202} for d in stream), [d.answers for d in stream]
    webhook_rows = await until_settled(observer, org.id, len(stream), stack, within=150)

    assert kill.webhook_jobs  # the kill did land in the middle of webhook jobs
    by_id = {r.id: r for r in webhook_rows}
    assert {d.job_id for d in stream} == set(by_id)
    assert all(by_id[d.job_id].status in ("complete", "stale") for d in stream)
    assert any(by_id[i].tries >= 2 for i in kill.webhook_jobs)  # run again after the kill
    for admin in admins:
        assert (await api.ok("GET", f"/api/v1/users/{admin['id']}"))["admin"]["role"] == "Manager"
    for user in suspended:
        assert (await api.ok("GET", f"/api/v1/users/{user['id']}"))["state"] == "SUSPENDED"
    for event_type, group in (("admin_create", admins), ("user_suspended", suspended)):
        applied = Counter(r["resource"]["email"] for r in await records(observer, org.id, event_type)
                          if r["success"] and r["initiated_by"]["type"] == "integration")
        assert applied == Counter({u["email"]: 1 for u in group}), event_type
    mailbox = smtp_server[1]
    # One email per admin: one Message-ID each. The same message may arrive twice only when the
    # kill cut its own mail job in the SMTP window (receivers drop it by its Message-ID).
    ids_by_recipient = {rcpt: {message_id(m.original_content) for m in mailbox.messages if rcpt in m.rcpt_tos}
                        for m in mailbox.messages for rcpt in m.rcpt_tos}
    assert sorted(ids_by_recipient) == sorted(a["email"] for a in admins), "an email for each admin given a role"
    assert all(len(ids) == 1 for ids in ids_by_recipient.values()), "one admin_role_assigned email each"
    copies = Counter(message_id(m.original_content) for m in mailbox.messages)
    cut_mails = {f"<{mail_id}@adminlink>".encode() for mail_id in kill.mails}
    assert {mid for mid, n in copies.items() if n > 1} <= cut_mails, "sent twice without a kill in its SMTP window"


def message_id(raw: bytes) -> bytes:
    for line in raw.split(b"\r\n"):
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip()
    return raw


async def test_redis_stopped_mid_stream_answers_503_then_loses_nothing(
        stack: Stack, observer: Services, http: aiohttp.ClientSession) -> None:
    org = await bootstrap_org(observer, "Outage Co")
    api = Api(http, org.key, observer)  # type: ignore[arg-type]
    users = [await api.user(mfa=False) for _ in range(24)]
    hr = await integration(api, "hr")
    path = f"/webhooks/hr/{hr['id']}"
    deliveries = [Delivery(path, hr["secret"], event("employee.terminated", email=u["email"])) for u in users]
    before, during, after = deliveries[:8], deliveries[8:16], deliveries[16:]

    await send_stream(http, before)
    assert all(d.answers == [202] for d in before)
    stack.redis.kill()  # everything arq held is gone with it
    await send_stream(http, during)
    assert all(d.answers == [503] for d in during), [d.answers for d in during]
    recorded = {r.id for r in await apply_jobs(observer, org.id)}
    assert len(recorded) == len(before) + len(during)  # the database took them: 503 still, as not enqueued

    stack.redis.start()
    await send_stream(http, during[:4] + after)  # half the refused ones are delivered again, half never
    assert all(d.answers[-1] == 202 for d in during[:4] + after)
    webhook_rows = await until_settled(observer, org.id, len(deliveries), stack, within=150)

    assert all(r.status == "complete" for r in webhook_rows), Counter(r.status for r in webhook_rows)
    assert {d.job_id for d in during[:4]} <= {r.id for r in webhook_rows}
    for user in users:
        assert (await api.ok("GET", f"/api/v1/users/{user['id']}"))["state"] == "SUSPENDED"
    suspended = Counter(r["resource"]["email"] for r in await records(observer, org.id, "user_suspended"))
    assert suspended == Counter({u["email"]: 1 for u in users})


async def test_two_workers_draining_one_integration_apply_every_event_once(
        stack: Stack, observer: Services, http: aiohttp.ClientSession, smtp_server: tuple[str, Mailbox]) -> None:
    """Two worker processes, and this test draining too (as a third worker would): batches of one
    integration claimed at once skip each other's rows (FOR UPDATE SKIP LOCKED)."""
    stack.start_worker()  # the second one
    org = await bootstrap_org(observer, "Two Workers Co")
    api = Api(http, org.key, observer)  # type: ignore[arg-type]
    admins = [await api.user() for _ in range(15)]
    suspended = [await api.user(mfa=False) for _ in range(45)]
    directory = await integration(api, "directory")
    path = f"/webhooks/directory/{directory['id']}"
    stream = [Delivery(path, directory["secret"], event("admin_role.assigned", email=a["email"],
                                                         data={"role": "Manager"})) for a in admins]
    stream += [Delivery(path, directory["secret"], event("user.suspended", email=u["email"])) for u in suspended]
    sending = asyncio.create_task(send_stream(http, stream + stream[::4], in_flight=12))
    drained: list[int] = []

    async def drain_meanwhile() -> None:
        while not sending.done():
            drained.append(await inbound.drain(observer, org.id, directory["id"]))
            await asyncio.sleep(0.01)

    await asyncio.gather(sending, drain_meanwhile(), drain_meanwhile())
    webhook_rows = await until_settled(observer, org.id, len(stream), stack, within=150)

    assert all(r.status == "complete" for r in webhook_rows), Counter(r.status for r in webhook_rows)
    assert sum(drained) < len(stream)  # the workers took their share
    for event_type, group in (("admin_create", admins), ("user_suspended", suspended)):
        applied = Counter(r["resource"]["email"] for r in await records(observer, org.id, event_type)
                          if r["success"] and r["initiated_by"]["type"] == "integration")
        assert applied == Counter({u["email"]: 1 for u in group}), event_type
    mailbox = smtp_server[1]
    copies = Counter(message_id(m.original_content) for m in mailbox.messages
                     if any(a["email"] in m.rcpt_tos for a in admins))
    assert len(copies) == len(admins) and set(copies.values()) == {1}, "one admin_role_assigned email each"
