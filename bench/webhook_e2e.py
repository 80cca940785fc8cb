"""Benchmark "end to end": webhook received -> change applied with its Directory Insights records.

    .venv/bin/python bench/webhook_e2e.py --database-url postgresql://postgres@127.0.0.1:5432/DB [--mode M]

Modes (``--mode``, default ``latency``; ``all`` runs the three):

- ``latency``: events/s and p50 / p99 latency at a fixed arrival rate (``--rate``, 200/s), with one
  worker process, beside arq running no-op jobs with the same worker settings at the same rate;
  CPU per event of every process.
- ``saturation``: one worker's sustained events/s: the events are recorded first (no worker
  running), then one worker applies them all; beside arq's no-op jobs/s measured the same way.
- ``burst``: the embedded default: ``adminlink serve`` on SQLite (in-process worker, embedded
  Redis) applying a burst of ``--burst`` events (10,000) sent as fast as it takes them.

Each mode runs the code of ``--baseline-ref`` (a commit; default e30322d, the code before batches;
empty for none) and this checkout one after the other, in the same minutes, on the same database,
and prints both: the machine's speed moves by the hour, so only paired figures count. The older
code runs from a ``git worktree`` checkout of that commit, with the same virtualenv. Every run
works in a new organization, ANALYZEd once its data is prepared.

An event's latency runs from the moment its request is sent to the moment its job row is
finished (the change and its records commit with it); a no-op job's from its enqueue to arq's
finish time. Results go to bench/results/webhook_e2e.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from webhook_ingest import (  # noqa: E402
    LOAD_GENERATOR,
    ROOT,
    CpuMeter,
    Request,
    Stack,
    StolenCpu,
    closed_loop,
    cpu_note,
    forget_queued_jobs,
    machine,
    percentile,
    pids_of,
    prepare,
    run_with_stack,
    service_event_loop,
    signed_requests,
    stolen_note,
    wait_for_port,
    write_results,
)

NOOP_QUEUE = "adminlink:bench:noop"
SELF = str(Path(__file__).resolve())


async def noop(ctx: dict[str, Any]) -> float:
    return time.time()


def serve_noop_worker() -> None:
    """arq with one no-op function and adminlink's worker settings."""
    from arq.connections import RedisSettings
    from arq.worker import Worker

    from service import config
    from service.adapters.queue import deserialize, serialize

    settings = config.load()
    assert settings.redis_url is not None
    asyncio.set_event_loop(service_event_loop())  # arq's Worker runs on the current loop
    Worker(functions=[noop], queue_name=NOOP_QUEUE, redis_settings=RedisSettings.from_dsn(settings.redis_url),
           poll_delay=settings.job_poll_delay, max_jobs=settings.job_max_jobs, job_timeout=settings.job_timeout,
           keep_result=3600, job_serializer=serialize, job_deserializer=deserialize).run()


def stats(latencies: list[float], first: float, last: float, name: str, sent: int) -> dict[str, Any]:
    return {"name": name, "events": len(latencies), "sent": sent,
            "per_second": round(len(latencies) / (last - first), 1),
            "p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
            "p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
            "max_ms": round(max(latencies) * 1000, 1)}


async def open_loop(rate: float, count: int, send: Any) -> list[float]:
    """Calls ``send(n)`` for n in range(count) at ``rate`` per second, whatever the answers take."""
    start = time.monotonic()
    tasks = []
    for n in range(count):
        delay = start + n / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(n)))
    return list(await asyncio.gather(*tasks))


async def baseline(stack: Stack, rate: float, count: int) -> dict[str, Any]:
    from arq.connections import RedisSettings, create_pool

    from service.adapters.queue import deserialize, serialize

    worker = stack.spawn(sys.executable, SELF, "--noop-worker", name="noop-worker")
    await worker_ready(stack, NOOP_QUEUE)
    redis = await create_pool(RedisSettings.from_dsn(stack.env["ADMINLINK_REDIS_URL"]), job_serializer=serialize,
                              job_deserializer=deserialize, default_queue_name=NOOP_QUEUE)
    meter = CpuMeter({"worker": pids_of(worker), "Redis": pids_of(stack.named["redis"]),
                      LOAD_GENERATOR: pids_of(os.getpid())})

    async def enqueue(n: int) -> float:
        sent = time.time()
        await redis.enqueue_job("noop", _job_id=f"noop-{n}-{time.time_ns()}", _queue_name=NOOP_QUEUE)
        return sent

    sent_at = await open_loop(rate, count, enqueue)
    deadline = time.monotonic() + 60
    while True:
        # Waiting costs a ZCARD, not a read of every result, so it does not load the machine
        # while the worker drains its queue.
        if not await redis.zcard(NOOP_QUEUE):
            results = await redis.all_job_results()
            if len(results) >= count:
                break
        if time.monotonic() > deadline:
            results = await redis.all_job_results()
            break
        await asyncio.sleep(0.2)
    finished = {r.job_id: r.finish_time.timestamp() for r in results}
    keys = sorted(finished)
    sent_by_id = {}
    for job_id in keys:
        sent_by_id[job_id] = sent_at[int(job_id.split("-")[1])]
    latencies = [finished[k] - sent_by_id[k] for k in keys]
    result = stats(latencies, min(sent_at), max(finished.values()), "arq no-op jobs", count)
    result["cpu_ms_per_event"] = meter.ms_each(len(keys))
    await redis.aclose()
    worker.terminate()
    return result


KINDS = ("employee.suspended", "employee.returned")


async def analyze(stack: Stack) -> None:
    """Fresh planner statistics for the tables the run just filled (PostgreSQL and SQLite alike)."""
    from service.adapters import db

    engine = db.make_engine(stack.settings().database_url)
    try:
        async with engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(sa.text("ANALYZE"))
    finally:
        await engine.dispose()


async def end_to_end(stack: Stack, rate: float, count: int, users: int, workers: int = 1) -> dict[str, Any]:
    from service.bootstrap import build

    target = await prepare(stack, users)
    await analyze(stack)
    requests: list[Request] = signed_requests(target, count, KINDS)
    worker_pids = [stack.start_worker().pid for _ in range(workers)]
    await worker_ready(stack, stack.settings().queue_name)
    # With several workers, their CPU together.
    meter = CpuMeter({"worker": pids_of(*worker_pids), **stack.parts("web"), LOAD_GENERATOR: pids_of(os.getpid())})
    statuses: dict[int, int] = {}
    job_of: dict[str, int] = {}
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{stack.web_port}",
                                     connector=aiohttp.TCPConnector(limit=256)) as http:
        async def deliver(n: int) -> float:
            sent = time.time()
            request = requests[n]
            async with http.post(request.path, data=request.body, headers=request.headers) as response:
                body = await response.json()
            statuses[response.status] = statuses.get(response.status, 0) + 1
            if response.status == 202:
                job_of[body["job_id"]] = n
            return sent

        sent_at = await open_loop(rate, count, deliver)
    services = await build(stack.settings())
    try:
        rows = await settled_rows(services, target.organization_id, len(job_of))
    finally:
        await services.close()
    cpu = meter.ms_each(len(rows))
    await forget_queued_jobs(stack, target.organization_id)  # anything the worker had not reached
    applied = [r for r in rows if r.status == "complete" and r.id in job_of]
    latencies = [r.finished_at.timestamp() - sent_at[job_of[r.id]] for r in applied]
    result = stats(latencies, min(sent_at), max(r.finished_at.timestamp() for r in applied),
                   "adminlink webhook -> change applied", count)
    result["cpu_ms_per_event"] = cpu
    result["statuses"] = {str(k): v for k, v in sorted(statuses.items())}
    result["job_statuses"] = {s: sum(r.status == s for r in rows) for s in sorted({r.status for r in rows})}
    return result


async def saturated(stack: Stack, count: int, users: int) -> dict[str, Any]:
    """The events recorded first, then one worker started: the rate at which it applies them,
    from its first claim to its last finish, and its CPU per event once it has started."""
    from service.bootstrap import build

    target = await prepare(stack, users)
    await analyze(stack)
    ingest = await closed_loop(f"http://127.0.0.1:{stack.web_port}", signed_requests(target, count, KINDS), 32,
                               "record")
    await analyze(stack)
    worker = stack.start_worker()
    await worker_ready(stack, stack.settings().queue_name)
    meter, ready = CpuMeter({"worker": pids_of(worker), **stack.parts("web")}), datetime.now(UTC)
    services = await build(stack.settings())
    try:
        rows = await settled_rows(services, target.organization_id, ingest.statuses.get(202, 0), within=600)
    finally:
        await services.close()
    cpu = meter.ms_each(sum(aware(r.finished_at) >= ready for r in rows))
    worker.terminate()
    await forget_queued_jobs(stack, target.organization_id)
    first, last = min(aware(r.started_at) for r in rows), max(aware(r.finished_at) for r in rows)
    return {"name": "adminlink worker, saturated", "events": len(rows), "recorded": dict(ingest.statuses),
            "per_second": round(len(rows) / (last - first).total_seconds(), 1), "cpu_ms_per_event": cpu,
            "job_statuses": {s: sum(r.status == s for r in rows) for s in sorted({r.status for r in rows})}}


async def noop_saturated(stack: Stack, count: int) -> dict[str, Any]:
    """arq's own ceiling with the same settings: ``count`` no-op jobs enqueued, then one worker."""
    from arq.connections import RedisSettings, create_pool

    from service.adapters.queue import deserialize, serialize

    redis = await create_pool(RedisSettings.from_dsn(stack.env["ADMINLINK_REDIS_URL"]), job_serializer=serialize,
                              job_deserializer=deserialize, default_queue_name=NOOP_QUEUE)
    for n in range(count):
        await redis.enqueue_job("noop", _job_id=f"sat-{n}-{time.time_ns()}", _queue_name=NOOP_QUEUE)
    worker = stack.spawn(sys.executable, SELF, "--noop-worker", name="noop-saturated")
    meter = CpuMeter({"worker": pids_of(worker)})
    deadline = time.monotonic() + 300
    while True:  # until arq's queue is empty (a ZCARD, not a read of every result)
        if not await redis.zcard(NOOP_QUEUE) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    results = [r for r in await redis.all_job_results() if r.job_id.startswith("sat-")]
    cpu = meter.ms_each(len(results))
    worker.terminate()
    await redis.aclose()
    first, last = min(r.start_time for r in results), max(r.finish_time for r in results)
    return {"name": "arq no-op jobs, saturated", "events": len(results),
            "per_second": round(len(results) / (last - first).total_seconds(), 1), "cpu_ms_per_event": cpu}


async def burst(stack: Stack, count: int, users: int) -> dict[str, Any]:
    """``adminlink serve`` (SQLite, in-process worker, embedded Redis) taking ``count`` events as
    fast as it answers them: the rate at which they are applied, from the first sent to the last
    finished."""
    from service.bootstrap import build

    target = await prepare(stack, users)
    await analyze(stack)
    requests = signed_requests(target, count, KINDS)
    serve = stack.spawn(sys.executable, "-m", "service.cli", "serve", name="serve")
    wait_for_port(stack.web_port)
    meter = CpuMeter({"serve": pids_of(serve)})
    started = datetime.now(UTC)
    ingest = await closed_loop(f"http://127.0.0.1:{stack.web_port}", requests, 32, "burst")
    services = await build(stack.settings())
    try:
        rows = await settled_rows(services, target.organization_id, ingest.statuses.get(202, 0), within=900)
    finally:
        await services.close()
    cpu = meter.ms_each(len(rows))
    serve.terminate()
    last = max(aware(r.finished_at) for r in rows)
    return {"name": "adminlink serve (SQLite), burst", "events": len(rows), "recorded": dict(ingest.statuses),
            "received_per_second": round(ingest.per_second, 1),
            "per_second": round(len(rows) / (last - started).total_seconds(), 1), "cpu_ms_per_event": cpu,
            "job_statuses": {s: sum(r.status == s for r in rows) for s in sorted({r.status for r in rows})}}


async def worker_ready(stack: Stack, queue_name: str, within: float = 60.0) -> None:
    """Until the worker of ``queue_name`` has polled it once (arq then writes its health-check
    key), so the first jobs do not measure the worker's start-up (imports take a second or more
    on a slow machine)."""
    from arq.connections import RedisSettings, create_pool
    from arq.constants import health_check_key_suffix

    redis = await create_pool(RedisSettings.from_dsn(stack.env["ADMINLINK_REDIS_URL"]))
    key = queue_name + health_check_key_suffix
    deadline = time.monotonic() + within
    try:
        while not await redis.exists(key):
            if time.monotonic() > deadline:
                raise TimeoutError("the worker did not start")
            await asyncio.sleep(0.1)
    finally:
        await redis.aclose()


async def settled_rows(services: Any, org_id: str, expected: int, within: float = 120.0) -> list[Any]:
    """The run's jobs once ``expected`` of them have settled. Waiting costs a count, not a read of
    every row, so it does not load the database while the worker drains its queue."""
    from service.adapters import orm

    jobs = orm.jobs
    mine = (jobs.c.organization_id == org_id, jobs.c.function == "apply_webhook")
    settled = jobs.c.status.in_(("complete", "stale", "denied", "dead"))
    deadline = time.monotonic() + within
    async with services.session_factory() as session:
        while (await session.scalar(sa.select(sa.func.count()).where(*mine, settled)) or 0) < expected:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
            await session.rollback()  # each count sees the commits since the last one
        return list(await session.execute(sa.select(jobs.c.id, jobs.c.status, jobs.c.started_at,
                                                    jobs.c.finished_at).where(*mine, settled)))


def aware(moment: datetime) -> datetime:
    """A stored moment in UTC (SQLite gives it back without its zone)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def checkouts(ref: str) -> list[tuple[str, Path]]:
    """(name, checkout) of each code to run: ``ref``'s (a worktree made once) and this one."""
    if not ref:
        return [("new", ROOT)]
    path = Path(tempfile.gettempdir()) / f"adminlink-old-{ref}"
    if not path.exists():
        subprocess.run(["git", "worktree", "add", "--detach", str(path), ref], cwd=ROOT, check=True,  # noqa: S607
                       stdout=subprocess.DEVNULL)
    return [(f"old ({ref})", path), ("new", ROOT)]


def worker_note(worker_ms: float | None, workers: int) -> str:
    """A worker is one Python process: one core at most, whatever the machine has."""
    if not worker_ms:
        return "worker capacity: unknown (no /proc)"
    return (f"{workers} worker process(es) at {worker_ms} ms of CPU per event: at most "
            f"{1000 * workers / worker_ms:.0f} events/s applied, even with a core each to themselves")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", default=os.environ.get("ADMINLINK_BENCH_DATABASE_URL"))
    p.add_argument("--mode", choices=("latency", "saturation", "burst", "all"), default="latency")
    p.add_argument("--baseline-ref", default="e30322d", help="the older code to pair with this one ('' for none)")
    p.add_argument("--rate", type=float, default=200.0, help="events per second (latency)")
    p.add_argument("--seconds", type=float, default=10.0, help="seconds of offered load (latency)")
    p.add_argument("--events", type=int, default=5000, help="events recorded before the worker starts (saturation)")
    p.add_argument("--burst", type=int, default=10_000, help="events sent to adminlink serve (burst)")
    p.add_argument("--users", type=int, default=500)
    p.add_argument("--workers", type=int, default=1, help="worker processes (the goal is for one)")
    p.add_argument("--noop-worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


def latency_mode(args: argparse.Namespace, code: list[tuple[str, Path]]) -> tuple[dict[str, Any], list[str]]:
    count = int(args.rate * args.seconds)
    runs: list[dict[str, Any]] = []

    async def noop_body(stack: Stack) -> dict[str, Any]:
        return await baseline(stack, args.rate, count)

    runs.append(run_with_stack(args, noop_body))
    for name, root in code:
        async def body(stack: Stack) -> dict[str, Any]:
            return await end_to_end(stack, args.rate, count, args.users, args.workers)

        runs.append({**run_with_stack(args, body, root=root), "code": name})
        runs[-1]["name"] = f"{runs[-1]['name']}: {name}"
    lines = ["### Webhook end to end, at a fixed rate", "",
             "| run | events/s | p50 ms | p99 ms | max ms | worker CPU ms/event | web CPU ms/event | "
             "PostgreSQL CPU ms/event | all processes CPU ms/event |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['per_second']} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | "
              + " | ".join(str(r["cpu_ms_per_event"].get(part, "-")) for part in ("worker", "web", "PostgreSQL", "all"))
              + " |" for r in runs]
    ours = runs[-1]
    lines += ["", f"goal: p99 under 100 ms at {args.rate:g} events/s (this code: p99 {ours['p99_ms']} ms); "
                  f"job statuses {ours['job_statuses']}; {args.workers} worker process(es); {args.rate:g} events/s "
                  f"for {args.seconds:g} s",
              cpu_note(ours["cpu_ms_per_event"], "event", args.rate, "the offered rate"),
              worker_note(ours["cpu_ms_per_event"].get("worker"), args.workers)]
    return {"latency": runs}, lines


def saturation_mode(args: argparse.Namespace, code: list[tuple[str, Path]]) -> tuple[dict[str, Any], list[str]]:
    runs: list[dict[str, Any]] = []
    for name, root in code:
        async def body(stack: Stack) -> dict[str, Any]:
            return await saturated(stack, args.events, args.users)

        runs.append({**run_with_stack(args, body, root=root), "code": name})
        runs[-1]["name"] = f"{runs[-1]['name']}: {name}"

    async def noop_body(stack: Stack) -> dict[str, Any]:
        return await noop_saturated(stack, args.events)

    runs.append(run_with_stack(args, noop_body))
    lines = ["### One worker, saturated", "", "| run | events (jobs) | events/s | worker CPU ms/event | job statuses |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['events']} | {r['per_second']} | {r['cpu_ms_per_event'].get('worker', '-')} | "
              f"{r.get('job_statuses', '-')} |" for r in runs]
    lines += ["", "goal: >= 1,000 events/s from one worker"]
    return {"saturation": runs}, lines


def burst_mode(args: argparse.Namespace, code: list[tuple[str, Path]]) -> tuple[dict[str, Any], list[str]]:
    runs: list[dict[str, Any]] = []
    sqlite_args = argparse.Namespace(**{**vars(args), "database_url": None})  # a SQLite file of each run's own
    for name, root in code:
        async def body(stack: Stack) -> dict[str, Any]:
            return await burst(stack, args.burst, args.users)

        runs.append({**run_with_stack(sqlite_args, body, root=root, extra_env={"ADMINLINK_REDIS_URL": ""},
                                      web=False), "code": name})
        runs[-1]["name"] = f"{runs[-1]['name']}: {name}"
        sqlite_args.database_url = None
    lines = ["### The embedded default: adminlink serve on SQLite, a burst", "",
             "| run | events | received/s | applied events/s | serve CPU ms/event | job statuses |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['events']} | {r['received_per_second']} | {r['per_second']} | "
              f"{r['cpu_ms_per_event'].get('serve', '-')} | {r['job_statuses']} |" for r in runs]
    return {"burst": runs}, lines


MODES = {"latency": latency_mode, "saturation": saturation_mode, "burst": burst_mode}


def main() -> None:
    args = parse()
    if args.noop_worker:
        serve_noop_worker()
        return
    code = checkouts(args.baseline_ref)
    stolen = StolenCpu()
    result: dict[str, Any] = {"benchmark": "webhook end to end", "machine": machine(),
                              "database": (args.database_url or "sqlite").split("@")[-1],
                              "baseline_ref": args.baseline_ref, "at": datetime.now(UTC).isoformat()}
    lines: list[str] = []
    for mode in (MODES if args.mode == "all" else [args.mode]):
        figures, table = MODES[mode](args, code)
        result.update(figures)
        lines += [*table, ""]
    result["cpu_stolen_percent"] = stolen.percent()
    lines += [f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, Python "
              f"{result['machine']['python']}; database {result['database']}; {result['at']}",
              stolen_note(result["cpu_stolen_percent"])]
    write_results(f"webhook_e2e-{args.mode}", result, "\n".join(lines))


if __name__ == "__main__":
    main()
