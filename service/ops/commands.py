"""What ops ask of a job."""

from __future__ import annotations

from dataclasses import dataclass

from service.domain.commands import Command


@dataclass(frozen=True)
class RetryJob(Command):
    job_id: str


@dataclass(frozen=True)
class AbortJob(Command):
    job_id: str
