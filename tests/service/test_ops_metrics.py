"""Prometheus /metrics (who may scrape it, and what it counts) and the structured logs (correlation
ids, no secrets)."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from service import config, metrics
from service.adapters import orm
from service.bootstrap import Services
from service.domain.commands import Actor
from service.domain.model import Role
from service.logging import JsonFormatter, redact, redact_text, request_log_middleware
from tests.conftest import Api, Org, suite_settings
from tests.service.ops_support import Worker, tidy  # noqa: F401 (tidy: an autouse fixture)

TOKEN = "scrape-token-" + "z" * 32

@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> config.Settings:
    return suite_settings(database_url, tmp_path, metrics_token=TOKEN)


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    """Every log line, as the service writes it (JSON)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


async def finished(services: Services, job_id: str) -> None:
    for _ in range(250):
        async with services.session_factory() as session:
            if await session.scalar(sa.select(orm.jobs.c.status).where(orm.jobs.c.id == job_id)) == "complete":
                break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # the worker counts the run and ends it just after the row is finished


async def scrape(client: TestClient, **headers: str) -> tuple[int, str]:
    response = await client.get("/metrics", headers=headers)
    return response.status, await response.text()


async def test_only_ops_keys_and_the_scrape_token_may_scrape(api: Api, client: TestClient) -> None:
    _, manager = await api.admin_with_key(Role.MANAGER)
    assert (await scrape(client))[0] == 401
    assert (await scrape(client, Authorization="Bearer " + "w" * 45))[0] == 401
    assert (await scrape(client, **{"x-api-key": "alk_unknown"}))[0] == 401
    assert (await scrape(client, **{"x-api-key": manager.key}))[0] == 403
    status, text = await scrape(client, **{"x-api-key": api.key})
    assert status == 200 and "adminlink_http_requests_total" in text
    status, text = await scrape(client, Authorization="Bearer " + TOKEN)
    assert status == 200
    found = samples(text)
    assert found[("adminlink_http_requests_total",
                  (("method", "GET"), ("route", "/metrics"), ("status", "403")))] >= 1
    assert ("adminlink_http_request_duration_seconds_count", (("method", "GET"), ("route", "/metrics"))) in found


async def test_jobs_and_queue_depth_are_counted(client: TestClient, services: Services, org: Org,
                                                workers: Worker) -> None:
    await workers.start()
    actor = Actor(org.id, "test", "system", Role.BILLING)
    async with services.uow(actor) as uow:
        done = await uow.add_job("send_email", {"mail_id": "gone"})
        waiting = await uow.add_job("send_email", {"mail_id": "later"})
        uow._new_jobs = [("send_email", done)]  # the second row stays queued, never handed to arq
        await uow.commit()
    await finished(services, done)
    found = samples((await scrape(client, Authorization="Bearer " + TOKEN))[1])
    labels = (("function", "send_email"), ("outcome", "complete"))
    assert found[("adminlink_jobs_total", labels)] >= 1
    assert found[("adminlink_job_duration_seconds_count", labels)] >= 1
    assert found[("adminlink_job_duration_seconds_bucket", tuple(sorted((*labels, ("le", "+Inf")))))] >= 1
    assert found[("adminlink_queue_depth", (("function", "send_email"), ("status", "queued")))] >= 1
    assert waiting


async def test_sign_in_attempts_and_webhook_signature_failures_are_counted(aiohttp_client: Any) -> None:
    """Read from the answers of those routes, whoever serves them."""

    async def login(request: web.Request) -> web.Response:
        if request.query.get("ok"):
            return web.json_response({"challenge_id": "c"})
        if request.query.get("push"):
            return web.json_response({"status": "pending", "push_id": "p"}, status=202)
        return web.json_response({"error": {"code": "invalid_credentials", "message": "no"}}, status=401)

    async def webhook(request: web.Request) -> web.Response:
        return web.json_response({"error": {"code": "invalid_signature", "message": "no"}}, status=401)

    app = web.Application(middlewares=[request_log_middleware, metrics.metrics_middleware])
    app.router.add_post("/auth/admin/login", login)
    app.router.add_post("/auth/user/login/mfa", login)
    app.router.add_post("/auth/user/go", login)
    app.router.add_get("/auth/duo/callback", login)
    app.router.add_post("/auth/user/go/options", login)  # a challenge for Go, not an attempt
    app.router.add_post("/webhooks/hr/{integration_id}", webhook)
    client = await aiohttp_client(app)
    value = metrics.REGISTRY.get_sample_value

    def attempts(portal: str, step: str, result: str) -> float:
        return value("adminlink_signin_attempts_total", {"portal": portal, "step": step, "result": result}) or 0

    others = [("user", "mfa", "pending"), ("user", "go", "invalid_credentials"), ("any", "duo", "invalid_credentials")]
    before = [attempts(*labels) for labels in others]
    options_before = attempts("user", "options", "invalid_credentials")
    before_fail = value("adminlink_signin_attempts_total",
                        {"portal": "admin", "step": "login", "result": "invalid_credentials"}) or 0
    before_ok = value("adminlink_signin_attempts_total", {"portal": "admin", "step": "login", "result": "ok"}) or 0
    before_hook = value("adminlink_webhook_signature_failures_total",
                        {"receiver": "hr", "code": "invalid_signature"}) or 0
    await client.post("/auth/admin/login")
    await client.post("/auth/admin/login")
    await client.post("/auth/admin/login?ok=1")
    await client.post("/webhooks/hr/abc")
    await client.post("/auth/user/login/mfa?push=1")
    await client.post("/auth/user/go")
    await client.get("/auth/duo/callback")
    await client.post("/auth/user/go/options")
    assert [attempts(*labels) for labels in others] == [n + 1 for n in before]
    assert attempts("user", "options", "invalid_credentials") == options_before == 0
    assert value("adminlink_signin_attempts_total",
                 {"portal": "admin", "step": "login", "result": "invalid_credentials"}) == before_fail + 2
    assert value("adminlink_signin_attempts_total", {"portal": "admin", "step": "login", "result": "ok"}) \
        == before_ok + 1
    assert value("adminlink_webhook_signature_failures_total",
                 {"receiver": "hr", "code": "invalid_signature"}) == before_hook + 1


async def test_request_logs_carry_the_request_id_and_no_secret(api: Api, client: TestClient,
                                                               captured: io.StringIO) -> None:
    response = await client.post("/api/v1/users", json={"email": "not an email", "username": "x",
                                                         "password": "a long user password 1"},
                                 headers={"x-api-key": api.key, "X-Request-Id": "trace-123"})
    assert response.status == 400 and response.headers["X-Request-Id"] == "trace-123"
    response = await client.get("/healthz", headers={"X-Request-Id": "bad id\u2028"})
    generated = response.headers["X-Request-Id"]
    assert generated != "bad id\u2028" and len(generated) == 32
    logged = lines(captured)
    access = [entry for entry in logged if entry["logger"] == "adminlink.access"]
    assert {"route": "/api/v1/users", "status": 400, "request_id": "trace-123"}.items() <= access[0].items()
    assert access[-1]["request_id"] == generated
    text = captured.getvalue()
    assert api.key not in text and "a long user password 1" not in text


async def test_job_logs_carry_the_job_id(services: Services, org: Org, workers: Worker,
                                         captured: io.StringIO) -> None:
    await workers.start()
    actor = Actor(org.id, "test", "system", Role.BILLING)
    async with services.uow(actor) as uow:
        job_id = await uow.add_job("send_email", {"mail_id": "gone"})
        await uow.commit()
    await finished(services, job_id)
    assert any(entry.get("job_id") == job_id and entry["logger"] == "arq.worker" for entry in lines(captured))


def test_redaction_of_secrets_in_data_and_text() -> None:
    data = {"email": "a@b.test", "password": "p", "nested": [{"client_secret": "s", "note": "Bearer abcdefghijkl"}],
            "webhook": "whsec_c2VjcmV0c2VjcmV0", "url": "smtp://user:pw@mail:25", "empty_token": ""}
    assert redact(data) == {"email": "a@b.test", "password": "[redacted]",
                            "nested": [{"client_secret": "[redacted]", "note": "Bearer [redacted]"}],
                            "webhook": "whsec_[redacted]", "url": "smtp://user:[redacted]@mail:25",
                            "empty_token": ""}
    record = logging.makeLogRecord({"msg": "key %s password=%s", "args": ("alk_abcdefghijklmn", "hunter2"),
                                    "levelname": "INFO", "name": "t", "token": "t0k3n"})
    entry = json.loads(JsonFormatter().format(record))
    assert entry["msg"] == "key alk_[redacted] password=[redacted]" and entry["token"] == "[redacted]"


def test_header_lines_that_the_http_parser_quotes_are_redacted() -> None:
    """aiohttp logs a request line it refuses with its raw bytes: a cookie jar with one bad byte
    must not put the session beside it in the log."""
    token, scim = "RD0-kOD6M2-pm3jo4kVWGcHILfcg8Y33P3wu2hc91eQ", "scim_" + "Q" * 43
    quoted = f"Invalid header value char:\n\n    b'Cookie: adminlink_session={token}; other=\\x01'\n       ^"
    assert token not in redact_text(quoted) and "Cookie: [redacted]" in redact_text(quoted)
    assert redact_text(f"b'Authorization: {scim}\\x7f'") == "b'Authorization: [redacted]"
    assert redact_text(f"x-scim: {scim}") == "x-scim: scim_[redacted]"
    assert redact_text(f"seen adminlink_user_session={token}; next") == "seen adminlink_user_session=[redacted]; next"
    assert redact_text("a scim_deleted_at column") == "a scim_deleted_at column"
