"""The jobs table as ops see it (``adapters.jobs.JobRows`` implements it). ``org_id`` None is the
host's CLI, which may see every organization's jobs; the API always passes the caller's."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Protocol


class JobRepository(Protocol):
    async def get(self, org_id: str | None, job_id: str) -> Any | None: ...

    async def move(self, job_id: str, was: str, **values: Any) -> bool:
        """Changes the row only if its status is still ``was``; False if someone moved it."""
        ...

    async def page(self, org_id: str | None, *, status: str | None, function: str | None,
                   since: datetime | None, after: tuple[datetime, str] | None, limit: int) -> list[Any]: ...

    async def status_counts(self, org_id: str | None, at: datetime, statuses: tuple[str, ...]) -> list[Any]: ...

    async def oldest_ready(self, org_id: str | None, at: datetime) -> list[tuple[str, Any]]: ...

    async def completed(self, org_id: str | None, at: datetime, windows: tuple[timedelta, ...]) -> list[Any]: ...

    async def first_tries_completed(self, org_id: str | None, since: datetime, limit: int) -> list[Any]: ...
