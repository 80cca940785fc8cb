"""``adminlink``: serve | web | worker | migrate | bootstrap | jobs | insights."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from aiohttp import web

from service import cli_ops, config
from service.adapters import db
from service.app import create_app
from service.bootstrap import Services, build
from service.domain import commands as c
from service.domain.errors import DomainError
from service.domain.model import Role, new_id
from service.logging import configure as configure_logging
from workers import health as worker_health
from workers.running import InProcessWorker

log = logging.getLogger(__name__)


def event_loop_factory(settings: config.Settings) -> Callable[[], asyncio.AbstractEventLoop]:
    """Makes loops of the kind ADMINLINK_EVENT_LOOP names."""
    if settings.event_loop == "uvloop":
        import uvloop

        return uvloop.new_event_loop
    return asyncio.new_event_loop


def run_service(main: Coroutine[Any, Any, None], settings: config.Settings) -> None:
    """Runs a long-lived process (serve, web, worker) on the configured event loop."""
    with asyncio.Runner(loop_factory=event_loop_factory(settings)) as runner:
        runner.run(main)


def _note_signal(received: asyncio.Future[signal.Signals], sig: signal.Signals) -> None:
    if not received.done():  # a second signal while stopping changes nothing
        received.set_result(sig)


def _stop_signals() -> asyncio.Future[signal.Signals]:
    """From now on SIGINT and SIGTERM stop the process gracefully: the first one settles this."""
    loop = asyncio.get_running_loop()
    received: asyncio.Future[signal.Signals] = loop.create_future()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, _note_signal, received, sig)
    return received


async def _until_stopped(worker: InProcessWorker | None, received: asyncio.Future[signal.Signals]) -> None:
    """Runs the worker (if any) until SIGINT or SIGTERM, logs which one came, then lets the
    worker's running jobs finish."""
    task = worker.start() if worker is not None else None
    await asyncio.wait([t for t in (task, received) if t is not None], return_when=asyncio.FIRST_COMPLETED)
    log.info("shutdown on %s", received.result().name if received.done() else "the worker's own exit")
    if worker is not None:
        await worker.stop()
    received.cancel()


async def _serve_web(services: Services, worker: InProcessWorker | None) -> None:
    settings = services.settings
    runner = web.AppRunner(create_app(services), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.host, settings.port).start()
    stop = _stop_signals()  # before the announcement: a signal sent once it is out is handled
    mode = "embedded SQLite + in-process Redis" if settings.embedded_redis else "Redis " + str(settings.redis_url)
    print(f"adminlink listening on http://{settings.host}:{settings.port}  ({mode})", flush=True)
    try:
        await _until_stopped(worker, stop)
    finally:
        await runner.cleanup()
        await services.close()


async def serve(settings: config.Settings) -> None:
    """One process: migrations applied, web app and a worker sharing one (possibly embedded) Redis."""
    services = await build(settings, migrate=True)
    await _serve_web(services, InProcessWorker(services))


async def web_only(settings: config.Settings) -> None:
    if settings.embedded_redis:  # its jobs would wait in a queue that no worker can read
        raise SystemExit("adminlink web needs ADMINLINK_REDIS_URL; `adminlink serve` runs an embedded worker")
    await _serve_web(await build(settings), None)


async def worker_only(settings: config.Settings) -> None:
    if settings.embedded_redis:
        raise SystemExit("adminlink worker needs ADMINLINK_REDIS_URL; `adminlink serve` runs an embedded worker")
    services = await build(settings)
    try:
        await _until_stopped(InProcessWorker(services), _stop_signals())
    finally:
        await services.close()


async def migrate(settings: config.Settings, revision: str, down: bool) -> None:
    engine = db.make_engine(settings.database_url)
    try:
        await (db.downgrade(engine, revision) if down else db.upgrade(engine, revision))
    finally:
        await engine.dispose()
    print(f"database {db.describe(settings.database_url)} {'downgraded' if down else 'upgraded'} to {revision}")


async def _applied_revisions(database_url: str) -> set[str]:
    """The database's schema revisions; a SQLite file that does not exist has none (and is not created)."""
    sqlite = db.sqlite_file(database_url)
    if sqlite is not None and not sqlite.exists():
        return set()
    engine = db.make_engine(database_url)
    try:
        return await db.applied_revisions(engine)
    finally:
        await engine.dispose()


async def _upgrade(database_url: str) -> None:
    engine = db.make_engine(database_url)
    try:
        await db.upgrade(engine)
    finally:
        await engine.dispose()


async def ensure_schema_for_bootstrap(database_url: str, migrate: bool) -> None:
    """A bootstrap goes into the database a server uses, whose schema is up to date. One with no
    migrations applied is most likely a new, empty one made by mistake (the embedded default
    ``./data`` is relative to the directory the command runs in): refused unless ``--migrate``
    asks for it to be set up here."""
    applied = await _applied_revisions(database_url)
    if applied == db.latest_revisions():
        return
    if migrate:
        await _upgrade(database_url)
        return
    where = db.describe(database_url)
    if not applied:
        raise SystemExit(
            f"adminlink bootstrap: no migrations have been applied to {where}, so no adminlink server uses it. "
            "Point ADMINLINK_DATABASE_URL (or ADMINLINK_DATA_DIR) at the server's database, or pass --migrate "
            "to set up this one.")
    raise SystemExit(
        f"adminlink bootstrap: the schema of {where} is at {', '.join(sorted(applied))}, older than this "
        "adminlink's: run `adminlink migrate` first, or pass --migrate.")


async def bootstrap(settings: config.Settings, org: str, email: str, *, migrate: bool = False) -> dict[str, Any]:
    print(f"adminlink bootstrap: database {db.describe(settings.database_url)}", file=sys.stderr, flush=True)
    await ensure_schema_for_bootstrap(settings.database_url, migrate)
    services = await build(settings)
    try:
        actor = c.Actor(new_id(), "cli", "system", Role.BILLING, source="cli", name="adminlink bootstrap")
        created: dict[str, Any] = await services.bus.handle(c.BootstrapOrganization(actor, org, email))
        return created
    finally:
        await services.close()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="adminlink", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("serve", help="web app + worker in one process, migrations applied (embedded defaults)")
    sub.add_parser("web", help="the web app alone (production, with ADMINLINK_REDIS_URL)")
    w = sub.add_parser("worker", help="an arq worker alone (production, with ADMINLINK_REDIS_URL)")
    w.add_argument("--check", action="store_true",
                   help="exit 0 if a worker on this queue has reported within its health-check interval, else 1")
    m = sub.add_parser("migrate", help="upgrade the database schema (or downgrade with --down)")
    m.add_argument("revision", nargs="?", default=None)
    m.add_argument("--down", action="store_true")
    b = sub.add_parser("bootstrap", help="create an organization and its first Administrator with Billing")
    b.add_argument("--org", required=True)
    b.add_argument("--email", required=True)
    b.add_argument("--migrate", action="store_true",
                   help="apply the migrations first (needed on a database that has none applied)")
    cli_ops.add_commands(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        settings = config.load()
    except config.ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, settings.log_format)
    try:
        if args.command == "serve":
            run_service(serve(settings), settings)
        elif args.command == "web":
            run_service(web_only(settings), settings)
        elif args.command == "worker" and args.check:
            return asyncio.run(worker_health.check(settings))
        elif args.command == "worker":
            run_service(worker_only(settings), settings)
        elif args.command == "migrate":
            asyncio.run(migrate(settings, args.revision or ("base" if args.down else "heads"), args.down))
        elif args.command in cli_ops.COMMANDS:
            return cli_ops.run(args, settings)
        elif args.command == "bootstrap":
            created = asyncio.run(bootstrap(settings, args.org, args.email, migrate=args.migrate))
            print(json.dumps(created, indent=2))
            print("The API key, password and TOTP secret are shown this once; only their hashes or "
                  "encrypted forms are stored.", file=sys.stderr)
    except DomainError as exc:
        print(f"{exc.code}: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
