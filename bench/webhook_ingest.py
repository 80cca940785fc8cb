"""Benchmark "ingest": signed HR webhooks accepted per second, and p50 / p99 response latency,
against a bare aiohttp handler that answers 202 to the same requests under the same load
generator, measured in the same run on the same machine.

    .venv/bin/python bench/webhook_ingest.py --database-url postgresql://postgres@127.0.0.1:5432/DB

It starts a redis-server of its own (on a free port), ``adminlink web`` on the given database
(migrated first; every run works in a new organization), and the bare handler; results go to
bench/results/webhook_ingest.json and .md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402
from standardwebhooks.webhooks import Webhook  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SELF = str(Path(__file__).resolve())
SECRET_KEY = "bench-secret-key-" + "b" * 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))]


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(),
            "system": f"{platform.system()} {platform.release()}"}


class StolenCpu:
    """The share of the machine's CPU time that its host took back (steal, in /proc/stat) between
    creation and ``percent()``. On a shared virtual machine a run's figures mean little when it is
    high, and baselines suffer from it as much as adminlink does; None where Linux does not say."""

    def __init__(self) -> None:
        self.start = _cpu_times()

    def percent(self) -> float | None:
        end = _cpu_times()
        if self.start is None or end is None:
            return None
        spent = [after - before for before, after in zip(self.start, end, strict=True)]
        return round(100 * spent[7] / sum(spent), 1) if sum(spent) else None


def _cpu_times() -> list[int] | None:
    """user, nice, system, idle, iowait, irq, softirq, steal: the machine's CPU time in ticks."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:9]
    except (OSError, IndexError):
        return None
    return [int(f) for f in fields] if len(fields) == 8 else None


def cpu_seconds(pid: int) -> float | None:
    """The user + system CPU time a process has used so far (Linux /proc); None elsewhere or once
    it has ended. Time the host stole is not in it, so CPU per request compares runs that steal
    slowed unequally."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def local_postgres_pids(database_url: str) -> Callable[[], list[int]] | None:
    """The processes of the PostgreSQL server a run uses, when it runs on this machine (its
    backends, WAL writer, autovacuum...): their CPU is part of what a request costs. None for
    SQLite or a server on another host."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql" or url.host not in (None, "", "127.0.0.1", "localhost", "::1"):
        return None

    def pids() -> list[int]:
        found = []
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and (entry / "comm").read_text().strip() == "postgres":
                    found.append(int(entry.name))
            except OSError:
                continue
        return found

    return pids


class CpuMeter:
    """The CPU time each part of the measured system spends between creation and ``ms_each``:
    ``parts`` names a part (web, worker, PostgreSQL, Redis, the load generator...) and how to find
    its processes now. A process that starts meanwhile counts from zero; one that ends meanwhile
    is not counted. Adding the parts up gives what an event costs the whole machine, and so how
    many cores a rate needs. Empty where there is no /proc."""

    def __init__(self, parts: dict[str, Callable[[], list[int]]]) -> None:
        self.parts = parts
        self.start = self._read()

    def _read(self) -> dict[str, dict[int, float]]:
        readings: dict[str, dict[int, float]] = {}
        for name, pids in self.parts.items():
            readings[name] = {pid: spent for pid in pids() if (spent := cpu_seconds(pid)) is not None}
        return readings

    def ms_each(self, count: int) -> dict[str, float]:
        """Milliseconds of CPU per request (or event) of each part, and of all of them ("all")."""
        if not count or not Path("/proc/self/stat").exists():
            return {}
        end = self._read()
        spent = {name: sum(t - self.start[name].get(pid, 0.0) for pid, t in end[name].items()) for name in end}
        each = {name: round(seconds * 1000 / count, 3) for name, seconds in spent.items()}
        return {**each, "all": round(sum(spent.values()) * 1000 / count, 3)}


def pids_of(*processes: subprocess.Popen[bytes] | int) -> Callable[[], list[int]]:
    pids = [p if isinstance(p, int) else p.pid for p in processes]
    return lambda: pids


SERVER = "server"  # the process that answers the requests: adminlink web, or the bare handler
LOAD_GENERATOR = "load generator"  # this benchmark process: it sends the requests and reads the answers


def stolen_note(percent: float | None) -> str:
    if percent is None:
        return "CPU taken back by the host while measuring: unknown (no /proc/stat)"
    return f"CPU taken back by the host while measuring (steal, /proc/stat): {percent}% of the machine's time"


class Stack:
    """A redis-server, adminlink processes and the environment they share; stopped on exit."""

    def __init__(self, database_url: str, workdir: Path, extra_env: dict[str, str] | None = None,
                 root: Path = ROOT) -> None:
        self.workdir = workdir
        self.root = root  # the checkout whose code the processes run (another commit's, for a paired run)
        self.redis_port = free_port()
        self.web_port = free_port()
        self.processes: list[subprocess.Popen[bytes]] = []
        self.named: dict[str, subprocess.Popen[bytes]] = {}
        self.env = {
            **os.environ,
            "ADMINLINK_DATABASE_URL": database_url,
            "ADMINLINK_REDIS_URL": f"redis://127.0.0.1:{self.redis_port}/0",
            "ADMINLINK_SECRET_KEY": SECRET_KEY,
            "ADMINLINK_DATA_DIR": str(workdir / "data"),
            "ADMINLINK_PORT": str(self.web_port),
            "ADMINLINK_LOG_LEVEL": "WARNING",
            "ADMINLINK_LOG_FORMAT": "text",
            **(extra_env or {}),
        }

    def spawn(self, *command: str, name: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{name}.log").open("wb")
        process = subprocess.Popen(list(command), cwd=self.root, env=self.env, stdout=log,  # noqa: S603
                                   stderr=subprocess.STDOUT)
        self.processes.append(process)
        self.named[name] = process
        return process

    def start_redis(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is needed (apt-get install redis-server)")
        self.spawn(binary, "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                   "no", "--dir", str(self.workdir), name="redis")
        wait_for_port(self.redis_port)

    def start_web(self) -> None:
        self.spawn(sys.executable, "-m", "service.cli", "web", name="web")
        wait_for_port(self.web_port)

    def start_worker(self) -> subprocess.Popen[bytes]:
        return self.spawn(sys.executable, "-m", "service.cli", "worker", name="worker")

    def parts(self, web: str = SERVER) -> dict[str, Callable[[], list[int]]]:
        """adminlink's web process (named ``web``) and what it uses, for a ``CpuMeter``."""
        parts = {web: pids_of(self.named["web"]), "Redis": pids_of(self.named["redis"])}
        postgres = local_postgres_pids(self.env["ADMINLINK_DATABASE_URL"])
        return parts if postgres is None else {**parts, "PostgreSQL": postgres}

    def settings(self) -> Any:
        from service import config

        return config.load({k: v for k, v in self.env.items() if k.startswith("ADMINLINK_")})

    def stop(self) -> None:
        for process in reversed(self.processes):
            if process.poll() is None:
                process.terminate()
        for process in self.processes:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()


@dataclass
class Target:
    """An organization with users and an HR integration (Administrator with Billing)."""

    organization_id: str
    integration_id: str
    secret: str
    emails: list[str]


async def prepare(stack: Stack, users: int) -> Target:
    from service.adapters import orm
    from service.bootstrap import build
    from service.domain import commands as c
    from service.domain.model import Role, new_id

    settings = stack.settings()
    await _migrate(stack)
    services = await build(settings)
    try:
        actor = c.Actor(new_id(), "bench", "system", Role.BILLING, source="cli")
        made = await services.bus.handle(c.BootstrapOrganization(actor, "Bench", f"owner-{new_id()[:8]}@bench.test"))
        org = made["organization_id"]
        admin = c.Actor(org, made["admin_id"], "admin", Role.BILLING)
        emails = [f"u{n}-{new_id()[:6]}@bench.test" for n in range(users)]
        async with services.session_factory() as session, session.begin():
            await session.execute(orm.users.insert(), [
                {"id": new_id(), "organization_id": org, "email": e, "username": e.split("@")[0], "state": "ACTIVATED",
                 "password_authority": "adminlink", "created_at": datetime.now(UTC)} for e in emails])
        hr = await services.bus.handle(c.CreateIntegration(admin, "hr", f"bench hr {new_id()[:6]}", Role.BILLING))
        return Target(org, hr["id"], hr["secret"], emails)
    finally:
        await services.close()


async def forget_queued_jobs(stack: Stack, organization_id: str) -> None:
    """Jobs a benchmark leaves waiting (the ingest run has no worker; the end-to-end run stops its
    worker once the events are applied): their rows go, or the reconciler of the next worker on
    this database would hand them all to arq, in front of that run's own events."""
    from service.adapters import db, orm

    engine = db.make_engine(stack.settings().database_url)
    try:
        async with engine.begin() as conn:
            await conn.execute(orm.jobs.delete().where(orm.jobs.c.organization_id == organization_id,
                                                       orm.jobs.c.status == "queued"))
    finally:
        await engine.dispose()


@dataclass
class Request:
    path: str
    body: bytes
    headers: dict[str, str]


def signed_requests(target: Target, count: int, kinds: tuple[str, ...] = ("employee.suspended",)) -> list[Request]:
    """``count`` deliveries, each a distinct event, signed now (valid for 5 minutes)."""
    signer = Webhook(target.secret)
    now = datetime.now(UTC)
    requests = []
    for n in range(count):
        email = target.emails[n % len(target.emails)]
        kind = kinds[(n // len(target.emails)) % len(kinds)]
        occurred = datetime.fromtimestamp(now.timestamp() - 240 + n * 1e-3, UTC)
        body = json.dumps({"id": f"evt-{n}-{time.time_ns()}", "type": kind, "occurred_at": occurred.isoformat(),
                           "subject": {"email": email}, "data": {}}).encode()
        message_id = f"msg-{n}-{time.time_ns()}"
        requests.append(Request(f"/webhooks/hr/{target.integration_id}", body, {
            "webhook-id": message_id, "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(message_id, now, body.decode()), "content-type": "application/json"}))
    return requests


@dataclass
class Run:
    name: str
    requests: int
    seconds: float
    latencies: list[float]
    statuses: dict[int, int]
    cpu_ms: dict[str, float] = field(default_factory=dict)  # CPU per request of each part, and "all"

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds

    def view(self) -> dict[str, Any]:
        return {"name": self.name, "requests": self.requests, "seconds": round(self.seconds, 3),
                "per_second": round(self.per_second, 1),
                "p50_ms": round(percentile(self.latencies, 0.50) * 1000, 2),
                "p99_ms": round(percentile(self.latencies, 0.99) * 1000, 2),
                "mean_ms": round(statistics.fmean(self.latencies) * 1000, 2),
                "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
                "cpu_ms_per_request": self.cpu_ms}


async def closed_loop(base_url: str, requests: list[Request], concurrency: int, name: str,
                      parts: dict[str, Callable[[], list[int]]] | None = None) -> Run:
    """``concurrency`` clients, each sending its next request as soon as the last is answered;
    with ``parts``, the CPU per request of each (``CpuMeter``)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = iter(requests)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(base_url=base_url, connector=connector) as http:
        async def client() -> None:
            for request in queue:
                started = time.perf_counter()
                async with http.post(request.path, data=request.body, headers=request.headers) as response:
                    await response.read()
                latencies.append(time.perf_counter() - started)
                statuses[response.status] = statuses.get(response.status, 0) + 1

        meter = CpuMeter(parts or {})
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(concurrency)))
        seconds = time.perf_counter() - started
        cpu = meter.ms_each(len(requests)) if parts else {}
    return Run(name, len(requests), seconds, latencies, statuses, cpu)


def bare_app() -> web.Application:
    """The baseline: reads the body and answers 202 with a job id, nothing else."""
    app = web.Application()

    async def accept(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"job_id": "0" * 32, "status_url": "/api/v1/jobs/" + "0" * 32}, status=202)

    app.router.add_post("/webhooks/hr/{integration_id}", accept)
    return app


def service_event_loop() -> asyncio.AbstractEventLoop:
    """A new loop of the kind adminlink's processes run on (ADMINLINK_EVENT_LOOP), so a
    baseline and adminlink are measured on the same event loop."""
    from service import config
    from service.cli import event_loop_factory

    return event_loop_factory(config.load())()


def serve_bare(port: int) -> None:
    web.run_app(bare_app(), host="127.0.0.1", port=port, access_log=None, print=None, loop=service_event_loop())


def write_results(name: str, body: dict[str, Any], table: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(body, indent=2) + "\n")
    (RESULTS / f"{name}.md").write_text(table + "\n")
    print(table)
    print(f"\nresults: bench/results/{name}.json and .md")


def table(title: str, rows: list[dict[str, Any]], notes: list[str]) -> str:
    lines = [f"### {title}", "", "| run | requests/s | p50 ms | p99 ms | server CPU ms/request | "
             "all processes CPU ms/request | statuses |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['per_second']} | {r['p50_ms']} | {r['p99_ms']} | "
              f"{r['cpu_ms_per_request'].get(SERVER, '-')} | {r['cpu_ms_per_request'].get('all', '-')} | "
              f"{r['statuses']} |" for r in rows]
    return "\n".join(lines + [""] + notes)


def cpu_note(cpu_ms: dict[str, float], what: str, rate: float, rate_is: str) -> str:
    """Where a request's (or event's) CPU goes, and how many cores ``rate`` of them a second need
    at that cost (``rate_is`` says what that rate is)."""
    if "all" not in cpu_ms:
        return "CPU per process: unknown (no /proc)"
    parts = ", ".join(f"{name} {ms}" for name, ms in cpu_ms.items() if name != "all")
    cores = cpu_ms["all"] * rate / 1000
    return (f"adminlink's CPU per {what}, by process (ms): {parts}; all together {cpu_ms['all']} ms. "
            f"At {rate:.0f}/s ({rate_is}) that is {cores:.2f} cores; this machine has {os.cpu_count()}")


async def measure(args: argparse.Namespace, stack: Stack, bare_port: int) -> dict[str, Any]:
    target = await prepare(stack, args.users)
    ours_url, bare_url = f"http://127.0.0.1:{stack.web_port}", f"http://127.0.0.1:{bare_port}"
    # Warm both servers up (connections, caches), then measure each with the same generator.
    await closed_loop(bare_url, signed_requests(target, args.warmup), args.concurrency, "warm-up")
    await closed_loop(ours_url, signed_requests(target, args.warmup), args.concurrency, "warm-up")
    runs: list[Run] = []
    generator = {LOAD_GENERATOR: pids_of(os.getpid())}
    stolen = StolenCpu()
    for _ in range(args.rounds):
        runs.append(await closed_loop(bare_url, signed_requests(target, args.requests), args.concurrency,
                                      "bare aiohttp 202", {SERVER: pids_of(stack.named["bare"]), **generator}))
        runs.append(await closed_loop(ours_url, signed_requests(target, args.requests), args.concurrency,
                                      "adminlink receiver", {**stack.parts(), **generator}))
    best: dict[str, Run] = {}
    for run in runs:
        if run.name not in best or run.per_second > best[run.name].per_second:
            best[run.name] = run
    bare, ours = best["bare aiohttp 202"], best["adminlink receiver"]
    await forget_queued_jobs(stack, target.organization_id)
    ratio = ours.per_second / bare.per_second
    return {"benchmark": "webhook ingest", "machine": machine(), "database": args.database_url.split("@")[-1],
            "concurrency": args.concurrency, "rounds": args.rounds, "runs": [r.view() for r in runs],
            "best": {"bare": bare.view(), "ours": ours.view()}, "ratio_per_second": round(ratio, 3),
            "cpu_stolen_percent": stolen.percent(),
            "goal": "ingest at least half of the bare handler (ratio >= 0.5)", "at": datetime.now(UTC).isoformat()}


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--database-url", default=os.environ.get("ADMINLINK_BENCH_DATABASE_URL"),
                   help="PostgreSQL (or SQLite) URL; default $ADMINLINK_BENCH_DATABASE_URL, else a SQLite file")
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--users", type=int, default=500)
    p.add_argument("--bare-server", type=int, help=argparse.SUPPRESS)
    return p.parse_args()


def run_with_stack(args: argparse.Namespace, body: Callable[[Stack], Awaitable[dict[str, Any]]],
                   extra_env: dict[str, str] | None = None, worker: bool = False, root: Path = ROOT,
                   web: bool = True) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="adminlink-bench-") as tmp:
        workdir = Path(tmp)
        if not args.database_url:
            args.database_url = f"sqlite+aiosqlite:///{workdir / 'bench.db'}"
        stack = Stack(args.database_url, workdir, extra_env, root)
        try:
            if stack.env.get("ADMINLINK_REDIS_URL"):
                stack.start_redis()
            else:  # the embedded default: no Redis of its own
                stack.env.pop("ADMINLINK_REDIS_URL", None)
            asyncio.run(_migrate(stack))
            if web:
                stack.start_web()
            if worker:
                stack.start_worker()
            return asyncio.run(body(stack))
        finally:
            stack.stop()


async def _migrate(stack: Stack) -> None:
    """The schema at this code's head; for another checkout's code, marked at that code's head
    (a later migration adds only what the older code does not read), so its processes start."""
    import sqlalchemy as sa

    from service.adapters import db

    engine = db.make_engine(stack.settings().database_url)
    await db.upgrade(engine)
    if stack.root != ROOT:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", "from service.adapters import db; print(*db.latest_revisions())", cwd=stack.root,
            stdout=subprocess.PIPE)
        heads = (await process.communicate())[0].decode().split()
        async with engine.begin() as conn:
            await conn.execute(sa.text("DELETE FROM alembic_version"))
            for head in heads:
                await conn.execute(sa.text("INSERT INTO alembic_version (version_num) VALUES (:v)"), {"v": head})
    await engine.dispose()


def main() -> None:
    args = parse()
    if args.bare_server:
        serve_bare(args.bare_server)
        return
    bare_port = free_port()

    async def body(stack: Stack) -> dict[str, Any]:
        stack.spawn(sys.executable, SELF, "--bare-server", str(bare_port), name="bare")
        wait_for_port(bare_port)
        return await measure(args, stack, bare_port)

    result = run_with_stack(args, body)
    best = result["best"]
    notes = [f"ratio (adminlink / bare, requests/s): **{result['ratio_per_second']}** "
             f"(goal: at least 0.5)",
             f"machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, Python "
             f"{result['machine']['python']}; database {result['database']}; {args.concurrency} concurrent "
             f"clients, best of {args.rounds} rounds of {args.requests} requests; {result['at']}",
             stolen_note(result["cpu_stolen_percent"]),
             cpu_note(best["ours"]["cpu_ms_per_request"], "request", best["bare"]["per_second"] / 2,
                      "the goal: half the bare handler's rate")]
    write_results("webhook_ingest", result, table("Webhook ingest", [best["bare"], best["ours"]], notes))


if __name__ == "__main__":
    main()
