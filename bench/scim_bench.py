"""SCIM benchmark: userName lookups and ``active`` PATCHes at 10,000 and 100,000 users, on PostgreSQL.

One command (PostgreSQL and Redis on loopback)::

    .venv/bin/python bench/scim_bench.py

It creates the database ``adminlink_h5_bench`` anew (``--database``), runs a real ``adminlink serve``
process on a free loopback port, and loads it from this process with a bounded number of requests.
In the same run, at each directory size, it measures a baseline: an authenticated SCIM request that
touches no user (``GET /scim/v2/ServiceProviderConfig``); lookups and PATCHes are reported as
requests/s and p50 / p99 latency, and as ratios to that baseline and to the 10,000-user figures.
Results go to ``bench/results/scim-<time>.json`` and ``.md``.

The directory is seeded with plain INSERTs (creating 100,000 users through the handlers would time
the seeding, not SCIM); every measured request goes through the HTTP service and its handlers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.adapters import db, orm  # noqa: E402
from service.domain.model import new_id  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SIZES = (10_000, 100_000)


@dataclass
class Figures:
    scenario: str
    users: int
    requests: int
    errors: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def recreate_database(server_url: str, name: str) -> None:
    engine = create_async_engine(f"{server_url}/postgres", isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    await engine.dispose()


async def seed(database_url: str, org_id: str, start: int, stop: int) -> None:
    """Users ``bench-<n>`` for n in [start, stop), in chunks, then fresh planner statistics."""
    engine = db.make_engine(database_url)
    now = datetime.now(UTC)
    async with engine.begin() as conn:
        for first in range(start, stop, 10_000):
            await conn.execute(sa.insert(orm.users), [
                {"id": new_id(), "organization_id": org_id, "email": f"bench-{n}@example.com",
                 "username": f"bench-{n}", "firstname": "Bench", "lastname": str(n), "state": "ACTIVATED",
                 "password_authority": "adminlink", "created_at": now, "external_id": f"ext-{n}"}
                for n in range(first, min(first + 10_000, stop))])
    async with engine.begin() as conn:
        await conn.execute(sa.text("ANALYZE"))
    await engine.dispose()


async def user_ids(database_url: str, org_id: str, how_many: int) -> list[str]:
    engine = db.make_engine(database_url)
    async with engine.connect() as conn:
        rows = await conn.execute(sa.select(orm.users.c.id).where(orm.users.c.organization_id == org_id)
                                  .order_by(sa.func.random()).limit(how_many))
        found = [r.id for r in rows]
    await engine.dispose()
    return found


async def measure(name: str, users: int, requests: int, concurrency: int,
                  call: Callable[[int], Awaitable[int]]) -> Figures:
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in range(requests):
        queue.put_nowait(n)

    async def worker() -> None:
        nonlocal errors
        while not queue.empty():
            n = queue.get_nowait()
            started = time.perf_counter()
            status = await call(n)
            latencies.append(time.perf_counter() - started)
            if status >= 300:
                errors += 1

    began = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    seconds = time.perf_counter() - began
    ordered = sorted(latencies)
    return Figures(name, users, requests, errors, round(seconds, 3), round(requests / seconds, 1),
                   round(statistics.median(ordered) * 1000, 2), round(ordered[int(len(ordered) * 0.99) - 1] * 1000, 2))


async def scenarios(base: str, token: str, users: int, ids: list[str], requests: int,
                    concurrency: int) -> list[Figures]:
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/scim+json"}
    rng = random.Random(users)  # noqa: S311 (load pattern, not a secret)
    async with aiohttp.ClientSession(headers=headers) as http:

        async def baseline(_: int) -> int:
            async with http.get(f"{base}/scim/v2/ServiceProviderConfig") as response:
                await response.read()
                return response.status

        async def lookup(_: int) -> int:
            name = f"bench-{rng.randrange(users)}"
            expression = quote('userName eq "' + name + '"')
            url = f"{base}/scim/v2/Users?filter={expression}&startIndex=1&count=100"
            async with http.get(url) as response:
                body = await response.json()
                return response.status if body.get("totalResults") == 1 else 599

        async def patch(n: int) -> int:
            user_id = ids[n % len(ids)]
            active = (n // len(ids)) % 2 == 1  # each user suspended, then activated on the next lap
            body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                    "Operations": [{"op": "replace", "value": {"active": active}}]}
            async with http.patch(f"{base}/scim/v2/Users/{user_id}", json=body) as response:
                await response.read()
                return response.status

        for warm in (baseline, lookup):
            for n in range(50):
                await warm(n)
        return [
            await measure("baseline: GET /ServiceProviderConfig", users, requests, concurrency, baseline),
            await measure("userName lookup", users, requests, concurrency, lookup),
            await measure("active PATCH", users, requests, concurrency, patch),
        ]


def start_server(database_url: str, redis_url: str, port: int, data_dir: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADMINLINK_")}
    env.update({"ADMINLINK_DATABASE_URL": database_url, "ADMINLINK_REDIS_URL": redis_url,
                "ADMINLINK_PORT": str(port), "ADMINLINK_DATA_DIR": data_dir, "ADMINLINK_LOG_LEVEL": "WARNING",
                "ADMINLINK_SECRET_KEY": "bench-secret-key-" + "b" * 32,
                "ADMINLINK_QUEUE_NAME": f"adminlink:bench:{port}"})
    subprocess.run([sys.executable, "-m", "service.cli", "migrate"], env=env, check=True, cwd=ROOT,
                   capture_output=True)
    return subprocess.Popen([sys.executable, "-m", "service.cli", "serve"], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def bootstrap(database_url: str, redis_url: str, data_dir: str) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ADMINLINK_")}
    env.update({"ADMINLINK_DATABASE_URL": database_url, "ADMINLINK_REDIS_URL": redis_url,
                "ADMINLINK_DATA_DIR": data_dir, "ADMINLINK_SECRET_KEY": "bench-secret-key-" + "b" * 32})
    made = subprocess.run([sys.executable, "-m", "service.cli", "bootstrap", "--org", "Bench",
                           "--email", "owner@bench.example.com"], env=env, cwd=ROOT, check=True,
                          capture_output=True, text=True)
    created: dict[str, Any] = json.loads(made.stdout)
    return created


async def wait_ready(base: str) -> None:
    async with aiohttp.ClientSession() as http:
        for _ in range(300):
            try:
                async with http.get(f"{base}/healthz") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.1)
    raise SystemExit("adminlink did not start")


async def integration_token(base: str, api_key: str) -> str:
    async with aiohttp.ClientSession(headers={"x-api-key": api_key}) as http:
        async with http.post(f"{base}/api/v1/integrations", json={
                "kind": "scim", "name": "bench", "role": "Administrator with Billing"}) as response:
            return str((await response.json())["token"])


def report(figures: list[Figures], started: str, args: argparse.Namespace) -> str:
    by = {(f.scenario, f.users): f for f in figures}
    lines = [f"# SCIM benchmark {started}", "",
             f"PostgreSQL, {args.requests} requests per scenario, {args.concurrency} concurrent clients, "
             "one `adminlink serve` process (web + worker) on loopback, 2 cores shared with the client.", "",
             "| users | scenario | req/s | p50 ms | p99 ms | errors | req/s ÷ baseline | p50 ÷ baseline | "
             "p50 ÷ 10k |",
             "|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for f in figures:
        base = by[("baseline: GET /ServiceProviderConfig", f.users)]
        small = by.get((f.scenario, SIZES[0]))
        lines.append(f"| {f.users:,} | {f.scenario} | {f.rps} | {f.p50_ms} | {f.p99_ms} | {f.errors} | "
                     f"{f.rps / base.rps:.2f} | {f.p50_ms / base.p50_ms:.2f} | "
                     f"{(f.p50_ms / small.p50_ms) if small else 1:.2f} |")
    return "\n".join(lines) + "\n"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="postgresql+asyncpg://postgres@127.0.0.1:5432")
    parser.add_argument("--database", default="adminlink_h5_bench")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()
    started = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    database_url = f"{args.server}/{args.database}"
    await recreate_database(args.server, args.database)
    data_dir = tempfile.mkdtemp(prefix="adminlink-bench-")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    server = start_server(database_url, args.redis, port, data_dir)
    figures: list[Figures] = []
    try:
        created = bootstrap(database_url, args.redis, data_dir)
        await wait_ready(base)
        token = await integration_token(base, created["api_key"])
        seeded = 0
        for size in SIZES:
            print(f"seeding to {size:,} users ...", flush=True)
            await seed(database_url, created["organization_id"], seeded, size)
            seeded = size
            ids = await user_ids(database_url, created["organization_id"], args.requests // 2)
            figures += await scenarios(base, token, size, ids, args.requests, args.concurrency)
            for f in figures[-3:]:
                print(f"  {f.scenario:40s} {f.rps:8.1f} req/s  p50 {f.p50_ms:7.2f} ms  p99 {f.p99_ms:7.2f} ms"
                      f"  errors {f.errors}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=30)
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = report(figures, started, args)
    (RESULTS / f"scim-{started}.md").write_text(text)
    (RESULTS / f"scim-{started}.json").write_text(json.dumps(
        {"started": started, "requests": args.requests, "concurrency": args.concurrency,
         "figures": [asdict(f) for f in figures]}, indent=2))
    print(text)


if __name__ == "__main__":
    asyncio.run(main())
