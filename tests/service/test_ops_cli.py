"""``adminlink jobs ...`` and ``adminlink insights query`` as real processes on the same database."""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from service import cli, cli_ops, config
from service.adapters import orm
from service.bootstrap import Services
from service.domain.commands import Actor
from service.domain.errors import DomainError
from service.domain.events import Recorded, Resource
from service.domain.model import Role, new_id
from tests.conftest import TEST_REDIS_URL, Org, bootstrap_org
from tests.service.ops_support import tidy  # noqa: F401 (an autouse fixture)

ADMINLINK = str(Path(sys.executable).with_name("adminlink"))

async def adminlink(settings: config.Settings, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADMINLINK_")}
    env.update({
        "ADMINLINK_DATABASE_URL": settings.database_url,
        "ADMINLINK_DATA_DIR": str(settings.data_dir),
        "ADMINLINK_SECRET_KEY": settings.secret_key.decode(),
        "ADMINLINK_LOG_LEVEL": "WARNING",
    })
    if TEST_REDIS_URL:
        env["ADMINLINK_REDIS_URL"] = TEST_REDIS_URL
    process = await asyncio.create_subprocess_exec(ADMINLINK, *args, env=env, stdout=asyncio.subprocess.PIPE,
                                                   stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    return int(process.returncode or 0), out.decode(), err.decode()


async def in_process(settings: config.Settings, *args: str) -> str:
    """The same commands without a new interpreter (each process start costs seconds of imports)."""
    parsed = cli.parser().parse_args(list(args))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert await asyncio.to_thread(cli_ops.run, parsed, settings) == 0
    return out.getvalue()


async def add_job(services: Services, org: Org, function: str, status: str = "queued") -> str:
    async with services.uow(Actor(org.id, "test", "system", Role.BILLING)) as uow:
        job_id = await uow.add_job(function, {"type": "user", "id": new_id(), "token": "t0ps3cr3t-value"})
        uow._new_jobs = []
        await uow.commit()
    if status != "queued":
        async with services.session_factory() as session, session.begin():
            await session.execute(sa.update(orm.jobs).where(orm.jobs.c.id == job_id).values(
                status=status, tries=8, error="RuntimeError: down"))
    return job_id


async def status_of(services: Services, job_id: str) -> Any:
    async with services.session_factory() as session:
        return (await session.execute(sa.select(orm.jobs).where(orm.jobs.c.id == job_id))).one()


async def test_list_show_and_stats(services: Services, org: Org) -> None:
    dead = await add_job(services, org, "apply_webhook", "dead")
    queued = await add_job(services, org, "send_email")
    theirs = await add_job(services, await bootstrap_org(services, "Other"), "apply_webhook")
    settings = services.settings

    code, out, err = await adminlink(settings, "jobs", "list", "--org", org.id)
    assert code == 0, err
    assert out.splitlines()[0].split() == ["ID", "QUEUE", "STATUS", "TRIES", "CREATED", "FINISHED"]
    assert dead in out and queued in out and theirs not in out

    out = await in_process(settings, "jobs", "list", "--org", org.id, "--status", "dead", "--json")
    assert [j["id"] for j in json.loads(out)["results"]] == [dead]
    out = await in_process(settings, "jobs", "list", "--org", org.id, "--limit", "1")
    hint = out.splitlines()[-1].split()  # the next page, with the same filters
    assert hint[:7] == ["more:", "adminlink", "jobs", "list", "--limit", "1", "--org"] and hint[7] == org.id
    out = await in_process(settings, *hint[2:])
    assert (queued in out) != (dead in out)  # the other one of the two

    out = await in_process(settings, "jobs", "show", dead)
    assert "RuntimeError: down" in out and "t0ps3cr3t" not in out and "[redacted]" in out

    out = await in_process(settings, "jobs", "stats", "--org", org.id)
    header, _, *rows = out.splitlines()
    assert header.split()[:6] == ["QUEUE", "QUEUED", "RUNNING", "DEFERRED", "FAILED", "DEAD"]
    by_queue = {row.split()[0]: row.split() for row in rows}
    assert by_queue["apply_webhook"][5] == "1" and by_queue["send_email"][1] == "1"

    with pytest.raises(DomainError, match="no such job"):
        await in_process(settings, "jobs", "show", theirs, "--org", org.id)


async def test_retry_and_abort_are_recorded_as_the_cli(services: Services, org: Org) -> None:
    dead = await add_job(services, org, "apply_webhook", "dead")
    queued = await add_job(services, org, "send_email")
    code, out, err = await adminlink(services.settings, "jobs", "retry", dead)
    assert code == 0, err
    assert f"job {dead} retried: queued" in out
    row = await status_of(services, dead)
    assert (row.status, row.tries) == ("queued", 0)
    out = await in_process(services.settings, "jobs", "abort", queued)
    assert "aborted (was queued" in out
    assert (await status_of(services, queued)).status == "aborted"
    code, _, err = await adminlink(services.settings, "jobs", "retry", queued)
    assert code == 1 and "job_not_retryable" in err
    async with services.session_factory() as session:
        records = [r.body for r in await session.execute(sa.select(orm.insights_events.c.body).where(
            orm.insights_events.c.organization_id == org.id,
            orm.insights_events.c.event_type.in_(("job_retry", "job_abort"))))]
    assert sorted((r["event_type"], r["success"], r["initiated_by"]["source"], r["initiated_by"]["name"])
                  for r in records) == [("job_abort", True, "cli", "adminlink jobs abort"),
                                        ("job_retry", True, "cli", "adminlink jobs retry")]


async def test_insights_query_exports_every_page(services: Services, org: Org, tmp_path: Path) -> None:
    actor = Actor(org.id, org.admin_id, "admin", Role.BILLING, email="ops@acme.test")
    async with services.uow(actor) as uow:
        uow.collect(*[Recorded("admin_login_attempt", Resource("admin", org.admin_id, email="=cmd|x"),
                               extra={"target_resource": {"type": "admin_portal"}}) for _ in range(5)],
                    Recorded("user_update", Resource("user", "u")))
        await uow.commit()
    seed = json.dumps({"and": [{"initiated_by.administrator": True}, {"target_resource.type": "admin_portal"}]})
    base = ["insights", "query", "--org", org.id, "--start-time", "2000-01-01T00:00:00Z", "--search-term", seed,
            "--page-size", "2"]
    out = await in_process(services.settings, *base)
    events = [json.loads(line) for line in out.splitlines()]
    assert len(events) == 5 and len({e["id"] for e in events}) == 5

    target = tmp_path / "logins.csv"
    code, _, err = await adminlink(services.settings, *base, "--format", "csv", "--output", str(target),
                                   "--fields", "timestamp,event_type,resource.email,initiated_by.email")
    assert code == 0 and "5 events exported" in err, err
    rows = list(csv.reader(io.StringIO(target.read_text())))
    assert rows[0] == ["timestamp", "event_type", "resource.email", "initiated_by.email"]
    assert len(rows) == 6 and rows[1][1:] == ["admin_login_attempt", "'=cmd|x", "ops@acme.test"]

    with pytest.raises(DomainError, match="start_time"):
        await in_process(services.settings, "insights", "query", "--org", org.id, "--start-time", "soon")


async def test_a_refused_export_leaves_the_output_file_alone(services: Services, org: Org, tmp_path: Path) -> None:
    kept = tmp_path / "kept.csv"
    kept.write_text("precious")
    base = ["insights", "query", "--org", org.id, "--start-time", "2000-01-01T00:00:00Z"]
    with pytest.raises(DomainError, match="start_time"):
        await in_process(services.settings, *base[:-1], "soon", "--output", str(kept))
    assert kept.read_text() == "precious"
    with pytest.raises(DomainError) as refused:
        await in_process(services.settings, *base, "--output", str(tmp_path / "no" / "such" / "dir.csv"))
    assert refused.value.code == "invalid_output"
    for bad in ("0", "-3"):
        with pytest.raises(SystemExit):
            cli.parser().parse_args([*base, "--max", bad])
