"""Benchmark "end to end": webhook received -> change applied with its Directory Insights records,
events/s and p50 / p99 latency at a fixed arrival rate, with one worker process, against arq
running no-op jobs with the same worker settings at the same rate, in the same run.

    .venv/bin/python bench/webhook_e2e.py --database-url postgresql://postgres@127.0.0.1:5432/DB

An event's latency runs from the moment its request is sent to the moment its job row is
finished (the change and its records commit just before); a no-op job's from its enqueue to
arq's finish time. Results go to bench/results/webhook_e2e.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import aiohttp  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from webhook_ingest import (  # noqa: E402
    LOAD_GENERATOR,
    CpuMeter,
    Request,
    Stack,
    StolenCpu,
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


async def end_to_end(stack: Stack, rate: float, count: int, users: int, workers: int = 1) -> dict[str, Any]:
    from service.bootstrap import build

    target = await prepare(stack, users)
    requests: list[Request] = signed_requests(target, count, ("employee.suspended", "employee.returned"))
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


async def settled_rows(services: Any, org_id: str, expected: int) -> list[Any]:
    """The run's jobs once ``expected`` of them have settled. Waiting costs a count, not a read of
    every row, so it does not load the database while the worker drains its queue."""
    from service.adapters import orm

    jobs = orm.jobs
    mine = (jobs.c.organization_id == org_id, jobs.c.function == "apply_webhook")
    settled = jobs.c.status.in_(("complete", "stale", "denied", "dead"))
    deadline = time.monotonic() + 120
    async with services.session_factory() as session:
        while (await session.scalar(sa.select(sa.func.count()).where(*mine, settled)) or 0) < expected:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
            await session.rollback()  # each count sees the commits since the last one
        return list(await session.execute(sa.select(jobs.c.id, jobs.c.status, jobs.c.finished_at).where(
            *mine, settled)))


def worker_note(worker_ms: float | None, workers: int) -> str:
    """A worker is one Python process: one core at most, whatever the machine has."""
    if not worker_ms:
        return "worker capacity: unknown (no /proc)"
    return (f"{workers} worker process(es) at {worker_ms} ms of CPU per event: at most "
            f"{1000 * workers / worker_ms:.0f} events/s applied, even with a core each to themselves")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", default=os.environ.get("ADMINLINK_BENCH_DATABASE_URL"))
    p.add_argument("--rate", type=float, default=200.0, help="events per second")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--users", type=int, default=500)
    p.add_argument("--workers", type=int, default=1, help="worker processes (the goal is for one)")
    p.add_argument("--noop-worker", action="store_true", help=argparse.SUPPRESS)
    return p.parse_args()


def main() -> None:
    args = parse()
    if args.noop_worker:
        serve_noop_worker()
        return
    count = int(args.rate * args.seconds)

    async def body(stack: Stack) -> dict[str, Any]:
        stolen = StolenCpu()
        base = await baseline(stack, args.rate, count)
        ours = await end_to_end(stack, args.rate, count, args.users, args.workers)
        return {"benchmark": "webhook end to end", "machine": machine(), "database": args.database_url.split("@")[-1],
                "cpu_stolen_percent": stolen.percent(),
                "rate": args.rate, "seconds": args.seconds, "workers": args.workers, "baseline": base, "ours": ours,
                "ratio_p50": round(ours["p50_ms"] / base["p50_ms"], 2),
                "ratio_p99": round(ours["p99_ms"] / base["p99_ms"], 2),
                "ratio_per_second": round(ours["per_second"] / base["per_second"], 3),
                "goal": "p99 under 100 ms at 200 events/s", "at": datetime.now(UTC).isoformat()}

    result = run_with_stack(args, body)
    base, ours = result["baseline"], result["ours"]
    lines = ["### Webhook end to end", "",
             "| run | events/s | p50 ms | p99 ms | max ms | worker CPU ms/event | web CPU ms/event | "
             "all processes CPU ms/event |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['per_second']} | {r['p50_ms']} | {r['p99_ms']} | {r['max_ms']} | "
              + " | ".join(str(r["cpu_ms_per_event"].get(part, "-")) for part in ("worker", "web", "all")) + " |"
              for r in (base, ours)]
    lines += ["", f"ratios (adminlink / arq no-op): p50 x{result['ratio_p50']}, p99 x{result['ratio_p99']}, "
                  f"events/s {result['ratio_per_second']}; goal: p99 under 100 ms at {args.rate:g} events/s "
                  f"(measured p99 {ours['p99_ms']} ms); job statuses {ours['job_statuses']}",
              f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, Python "
              f"{result['machine']['python']}; database {result['database']}; {args.workers} worker process(es); "
              f"{args.rate:g} events/s for {args.seconds:g} s; {result['at']}",
              stolen_note(result["cpu_stolen_percent"]),
              cpu_note(ours["cpu_ms_per_event"], "event", args.rate, "the offered rate"),
              worker_note(ours["cpu_ms_per_event"].get("worker"), args.workers)]
    write_results("webhook_e2e", result, "\n".join(lines))


if __name__ == "__main__":
    main()
