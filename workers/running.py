"""An arq worker run inside this process (``adminlink serve`` / ``adminlink worker``, and the tests),
stopped gracefully: it stops taking jobs, lets the running ones finish, and only then cancels what
is left. arq's own ``Worker.close()`` cancels running jobs at once and re-raises their
``CancelledError`` into the caller; stopping through here never does either."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from arq.worker import Worker

from service.bootstrap import Services

log = logging.getLogger(__name__)

# `docker stop` waits 10 s between SIGTERM and SIGKILL: leave room to close connections.
SHUTDOWN_GRACE_SECONDS = 8.0


class _EmbeddedWorker(Worker):
    """arq's worker, without arq's word on why it stopped: with ``handle_signals=False`` arq's
    ``close()`` logs "shutdown on SIGUSR1" whatever the process received. The process logs the
    signal it did receive (service/cli.py) and ``InProcessWorker.stop`` the jobs' tally."""

    def handle_sig(self, signum: int) -> None:
        # Called only from close(), after InProcessWorker.stop has ended every task this would cancel.
        pass


class InProcessWorker:
    """One arq worker on the web app's own services and Redis pool."""

    def __init__(self, services: Services) -> None:
        # Imported here: importing workers.settings reads the environment for `arq`'s class.
        from workers.settings import worker_options

        self.worker = _EmbeddedWorker(
            **worker_options(services.settings),
            redis_pool=services.redis,
            ctx={"services": services},
            handle_signals=False,  # the process stops on its own signal handlers (service/cli.py)
        )
        self._main: asyncio.Task[Any] | None = None

    def start(self) -> asyncio.Task[Any]:
        self._main = asyncio.create_task(self.worker.main())
        return self._main

    async def stop(self, grace: float = SHUTDOWN_GRACE_SECONDS) -> None:
        if self._main is None:
            return
        main, self._main = self._main, None
        self.worker.allow_pick_jobs = False
        running = [t for t in self.worker.tasks.values() if not t.done()]
        if running:
            await asyncio.wait(running, timeout=grace)
        main.cancel()
        await asyncio.gather(main, return_exceptions=True)
        # A job cut off here stays in arq's queue and runs again once its in-progress mark expires.
        leftovers = list(self.worker.tasks.values())
        log.info("worker stopped: %d jobs complete, %d failed, %d retried, %d cut off", self.worker.jobs_complete,
                 self.worker.jobs_failed, self.worker.jobs_retried, sum(not t.done() for t in leftovers))
        for task in leftovers:
            task.cancel()
        await asyncio.gather(*leftovers, return_exceptions=True)
        self.worker.tasks.clear()
        await self.worker.close()
