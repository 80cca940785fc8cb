"""arq workers: ``arq workers.WorkerSettings`` or ``adminlink worker``."""

from typing import Any


def __getattr__(name: str) -> Any:
    # WorkerSettings reads the configuration; load it only when a worker asks for it.
    if name == "WorkerSettings":
        from workers.settings import WorkerSettings

        return WorkerSettings
    raise AttributeError(name)
