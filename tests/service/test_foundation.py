"""The ground everything stands on: configuration, health, migrations, CLI, the job serializer."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import create_async_engine

from service import cli, config
from service.adapters import db, orm
from service.adapters.crypto import token_hash
from service.app import create_app
from service.bootstrap import Services, build
from tests.conftest import TEST_DATABASE_URL, free_port

ADMINLINK = str(Path(sys.executable).with_name("adminlink"))


def test_secret_key_is_generated_once_with_owner_only_mode(tmp_path: Path) -> None:
    env = {"ADMINLINK_DATA_DIR": str(tmp_path)}
    first = config.load(env).secret_key
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600
    assert config.load(env).secret_key == first and len(first) >= 32


@pytest.mark.parametrize(
    ("name", "value"),
    [("ADMINLINK_SECRET_KEY", "short"), ("ADMINLINK_PORT", "eighty"), ("ADMINLINK_COOKIE_SECURE", "maybe"),
     ("ADMINLINK_EVENT_LOOP", "trio")],
)
def test_bad_settings_are_refused_by_name(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(config.ConfigError, match=name):
        config.load({"ADMINLINK_DATA_DIR": str(tmp_path), name: value})


@pytest.mark.skipif(sys.platform == "win32", reason="uvloop is not installed on Windows")
def test_long_running_processes_run_on_uvloop_unless_told_otherwise(tmp_path: Path) -> None:
    env = {"ADMINLINK_DATA_DIR": str(tmp_path)}
    assert config.load(env).event_loop == "uvloop"
    assert config.load({**env, "ADMINLINK_EVENT_LOOP": "asyncio"}).event_loop == "asyncio"


def test_database_urls_get_the_async_driver(tmp_path: Path) -> None:
    env = {"ADMINLINK_DATA_DIR": str(tmp_path), "ADMINLINK_DATABASE_URL": "postgres://u@h/db"}
    assert config.load(env).database_url == "postgresql+asyncpg://u@h/db"
    assert config.load({"ADMINLINK_DATA_DIR": str(tmp_path)}).database_url.startswith("sqlite+aiosqlite:///")


async def test_health_and_readiness(client: Any) -> None:
    assert (await (await client.get("/healthz")).json()) == {"status": "ok"}
    ready = await client.get("/readyz")
    assert ready.status == 200 and (await ready.json())["checks"] == {"database": "ok", "redis": "ok"}


async def test_readiness_names_the_failing_part(settings: config.Settings, aiohttp_client: Any,
                                                tmp_path: Path) -> None:
    dead_redis = ArqRedis.from_url(f"redis://127.0.0.1:{free_port()}")  # nothing listens there
    missing_db = f"sqlite+aiosqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"
    services = await build(
        config.load({"ADMINLINK_DATA_DIR": str(tmp_path), "ADMINLINK_DATABASE_URL": missing_db}), redis=dead_redis
    )
    client = await aiohttp_client(create_app(services))
    response = await client.get("/readyz")
    assert response.status == 503
    assert set((await response.json())["failing"]) == {"database", "redis"}
    await services.engine.dispose()


async def test_unknown_paths_and_methods_answer_json_errors(client: Any) -> None:
    missing = await client.get("/nope")
    assert missing.status == 404 and (await missing.json())["error"]["code"] == "not_found"
    wrong = await client.put("/healthz")
    assert wrong.status == 405 and (await wrong.json())["error"]["code"] == "method_not_allowed"


async def test_jobs_travel_as_json_never_pickle(services: Services) -> None:
    await services.queue.enqueue("send_email", "job-json-check")
    raw = await services.redis.get("arq:job:job-json-check")
    assert json.loads(raw)["f"] == "send_email"


async def test_many_jobs_enqueue_as_arq_enqueues_one(services: Services) -> None:
    queue, name = services.queue, services.settings.queue_name
    assert await queue.enqueue("send_email", "known-job")
    await services.redis.set("arq:result:finished-job", b"{}")  # arq still remembers its run
    assert await queue.enqueue_many("send_email", ["known-job", "finished-job", "new-1", "new-2"]) == 2
    assert await queue.enqueue_many("send_email", ["new-1"]) == 0
    assert await services.redis.zscore(name, "finished-job") is None
    for job_id in ("new-1", "new-2"):
        assert await services.redis.zscore(name, job_id) is not None
        job = await services.redis._get_job_def(job_id.encode(), None)
        assert (job.function, list(job.args), job.kwargs) == ("send_email", [job_id], {})
        assert 0 < await services.redis.pttl(f"arq:job:{job_id}") <= services.redis.expires_extra_ms


def test_worker_settings_are_what_arq_reads() -> None:
    from workers import WorkerSettings

    names = {getattr(f, "name", None) or f.__name__ for f in WorkerSettings.functions}  # arq's func() has a name
    # sessions end at commit, not in a job; webhook rows are drained in batches (issue 18)
    assert names == {"send_email", "apply_webhook", "drain_webhooks"}
    assert WorkerSettings.job_serializer(WorkerSettings.job_deserializer(b'{"a":1}')) == b'{"a":1}'


def test_end_sessions_rows_of_earlier_versions_are_settled_by_the_migration(tmp_path: Path) -> None:
    """No worker runs ``end_sessions`` any more: a row an earlier version left unfinished would be
    handed to arq again and again; the migration marks it complete, and touches nothing else."""
    engine = db.make_engine(f"sqlite+aiosqlite:///{tmp_path / 'old.db'}")
    statuses = {"old-queued": ("end_sessions", "queued"), "old-failed": ("end_sessions", "failed"),
                "old-done": ("end_sessions", "complete"), "mail": ("send_email", "queued")}

    async def migrate_over_old_rows() -> dict[str, str]:
        await db.upgrade(engine, "0004")
        async with engine.begin() as conn:
            await conn.execute(orm.jobs.insert(), [
                {"id": job_id, "idempotency_key": job_id, "function": function, "args": {}, "status": status,
                 "created_at": datetime.now(UTC)} for job_id, (function, status) in statuses.items()])
        await db.upgrade(engine)
        async with engine.connect() as conn:
            rows = await conn.execute(sa.select(orm.jobs.c.id, orm.jobs.c.status))
            found = {row.id: row.status for row in rows}
        await engine.dispose()
        return found

    assert asyncio.run(migrate_over_old_rows()) == {"old-queued": "complete", "old-failed": "complete",
                                                    "old-done": "complete", "mail": "queued"}


async def _schema_diff(url: str, schema: str | None) -> list[Any]:
    args = {"server_settings": {"search_path": schema}} if schema else {}
    engine = create_async_engine(url, connect_args=args)
    if url.startswith("sqlite"):
        engine = db.make_engine(url)
    await db.upgrade(engine)
    await db.downgrade(engine, "base")
    await db.upgrade(engine)
    async with engine.connect() as conn:
        diff = await conn.run_sync(lambda sync: compare_metadata(MigrationContext.configure(sync), orm.metadata))
    await db.downgrade(engine, "base")
    async with engine.connect() as conn:
        left = await conn.run_sync(lambda sync: sa.inspect(sync).get_table_names())
    await engine.dispose()
    assert set(left) <= {"alembic_version"}
    # SQLite cannot reflect expression indexes, so autogenerate reports them as missing there.
    return [d for d in diff if not (url.startswith("sqlite") and d[0] == "add_index")]


async def test_migrations_upgrade_and_downgrade_and_match_the_models(tmp_path: Path) -> None:
    assert await _schema_diff(f"sqlite+aiosqlite:///{tmp_path / 'migrate.db'}", None) == []
    if TEST_DATABASE_URL:
        url = config.normalise_database_url(TEST_DATABASE_URL)
        engine = create_async_engine(url)
        async with engine.begin() as conn:
            await conn.execute(sa.text("DROP SCHEMA IF EXISTS migration_check CASCADE"))
            await conn.execute(sa.text("CREATE SCHEMA migration_check"))
        await engine.dispose()
        assert await _schema_diff(url, "migration_check") == []


def _cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADMINLINK_")}
    env["ADMINLINK_DATA_DIR"] = str(tmp_path / "data")
    return env


def test_bootstrap_prints_the_api_key_once_and_stores_its_hash(tmp_path: Path) -> None:
    env = _cli_env(tmp_path)
    done = subprocess.run([ADMINLINK, "bootstrap", "--org", "Acme", "--email", "owner@acme.test", "--migrate"],
                          env=env, capture_output=True, text=True, timeout=120, check=True)
    printed = json.loads(done.stdout)
    assert printed["api_key"].startswith("alk_") and "shown this once" in done.stderr
    assert f"database SQLite file {tmp_path / 'data' / 'adminlink.db'}" in done.stderr

    async def stored() -> list[Any]:
        engine = db.make_engine(f"sqlite+aiosqlite:///{tmp_path / 'data' / 'adminlink.db'}")
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.select(orm.api_keys.c.key_hash, orm.api_keys.c.prefix))).all()
            admins = (await conn.execute(sa.select(orm.admins.c.password_hash, orm.admins.c.totp_secret))).all()
        await engine.dispose()
        return [rows, admins]

    keys, admins = asyncio.run(stored())
    assert keys == [(token_hash(printed["api_key"]), printed["api_key"][:10])]
    dump = (tmp_path / "data" / "adminlink.db").read_bytes()
    for secret in (printed["api_key"], printed["password"], printed["totp_secret"]):
        assert secret.encode() not in dump
    assert admins[0][0].startswith("$argon2id$")


def _bootstrap(env: dict[str, str], cwd: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ADMINLINK, "bootstrap", "--org", "Acme", "--email", "owner@acme.test", *extra],
                          env=env, cwd=cwd, capture_output=True, text=True, timeout=120)


def test_bootstrap_refuses_a_database_without_migrations_and_names_it(tmp_path: Path) -> None:
    """Run from another directory, the embedded default ``./data`` is a new, empty database: the
    organization would be made where no server looks. Refused, and nothing is created."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADMINLINK_")}
    database = elsewhere / "data" / "adminlink.db"
    refused = _bootstrap(env, elsewhere)
    assert refused.returncode == 1 and refused.stdout == ""
    assert f"no migrations have been applied to SQLite file {database}" in refused.stderr
    assert "--migrate" in refused.stderr and "ADMINLINK_DATA_DIR" in refused.stderr
    assert not database.exists()
    # A database the server has migrated takes the bootstrap as it is; --migrate sets up a new one.
    migrated = subprocess.run([ADMINLINK, "migrate"], env=env, cwd=elsewhere, capture_output=True, text=True,
                              timeout=120, check=True)
    assert f"database SQLite file {database} upgraded to heads" in migrated.stdout
    done = _bootstrap(env, elsewhere)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["api_key"].startswith("alk_")
    assert f"adminlink bootstrap: database SQLite file {database}" in done.stderr


def test_bootstrap_refuses_an_older_schema_unless_told_to_migrate(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"

    async def at_0004() -> None:
        engine = db.make_engine(url)
        await db.upgrade(engine, "0004")
        await engine.dispose()

    asyncio.run(at_0004())
    with pytest.raises(SystemExit, match="is at 0004, older than this adminlink's"):
        asyncio.run(cli.ensure_schema_for_bootstrap(url, migrate=False))
    asyncio.run(cli.ensure_schema_for_bootstrap(url, migrate=True))
    asyncio.run(cli.ensure_schema_for_bootstrap(url, migrate=False))  # now up to date


def test_bootstrap_names_a_postgresql_database_without_its_password() -> None:
    assert db.describe("postgresql+asyncpg://adminlink:hunter2@db:5432/adminlink") == (
        "postgresql+asyncpg://adminlink:***@db:5432/adminlink")


def test_serve_answers_health_and_readiness_within_a_minute(tmp_path: Path) -> None:
    port = free_port()
    env = {**_cli_env(tmp_path), "ADMINLINK_PORT": str(port)}
    process = subprocess.Popen([ADMINLINK, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as ready:  # noqa: S310
                    assert json.load(ready)["status"] == "ready"
                    break
            except OSError:
                assert process.poll() is None, "serve exited"
                assert time.monotonic() < deadline, "not ready within 60 s"
                time.sleep(0.2)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as health:  # noqa: S310
            assert json.load(health) == {"status": "ok"}
    finally:
        process.terminate()
        output = process.communicate(timeout=30)[0].decode()
    assert process.returncode == 0, output
    assert f"http://127.0.0.1:{port}" in output


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_logs_the_signal_that_stopped_it(tmp_path: Path, sig: signal.Signals) -> None:
    port = free_port()
    env = {**_cli_env(tmp_path), "ADMINLINK_PORT": str(port)}
    process = subprocess.Popen([ADMINLINK, "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        assert process.stdout is not None
        assert "listening" in process.stdout.readline()  # the signal handlers are in place
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    messages = [json.loads(line)["msg"] for line in stderr.splitlines() if line.startswith("{")]
    assert f"shutdown on {sig.name}" in messages
    assert not [m for m in messages if "SIGUSR1" in m]
    assert [m for m in messages if m.startswith("worker stopped:")]


def test_web_alone_needs_a_redis_that_a_worker_reads(tmp_path: Path) -> None:
    """Its jobs would wait for good in an in-process queue: ``serve`` is the one-process mode."""
    settings = config.load({"ADMINLINK_SECRET_KEY": "k" * 40, "ADMINLINK_DATA_DIR": str(tmp_path),
                            "ADMINLINK_PORT": "0"})
    with pytest.raises(SystemExit, match="ADMINLINK_REDIS_URL"):  # not a server that serves on
        asyncio.run(asyncio.wait_for(cli.web_only(settings), 10))
