"""The life of a job row: its statuses and the moves between them (docs/webhooks.md, docs/ops.md).

A worker claims a row to run it and finishes it when the run ends; ops retry or abort it. The
jobs table, the worker, the ops API, dashboard and CLI all read the moves from ``TRANSITIONS``.
"""

from __future__ import annotations

import enum


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    COMPLETE = "complete"
    FAILED = "failed"  # tried again later
    DEAD = "dead"  # cannot succeed, never tried again
    STALE = "stale"  # nothing applied: newer news was there first
    DENIED = "denied"  # refused by the permission table, never tried again
    ABORTED = "aborted"  # by ops


class JobMove(enum.Enum):
    CLAIM = "claim"  # a worker starts a run; a row in progress is claimed again when its worker died
    FINISH = "finish"  # the run ends
    RETRY = "retry"  # ops: a dead job starts afresh, a failed one gets its next try now
    ABORT = "abort"  # ops: a waiting or running job is never run again


ENDINGS = (JobStatus.COMPLETE, JobStatus.FAILED, JobStatus.DEAD, JobStatus.STALE, JobStatus.DENIED)

# (before, move, after): every change a job row may go through.
TRANSITIONS: tuple[tuple[JobStatus, JobMove, JobStatus], ...] = (
    (JobStatus.QUEUED, JobMove.CLAIM, JobStatus.IN_PROGRESS),
    (JobStatus.IN_PROGRESS, JobMove.CLAIM, JobStatus.IN_PROGRESS),
    (JobStatus.FAILED, JobMove.CLAIM, JobStatus.IN_PROGRESS),
    *((JobStatus.IN_PROGRESS, JobMove.FINISH, ending) for ending in ENDINGS),
    (JobStatus.FAILED, JobMove.RETRY, JobStatus.FAILED),
    (JobStatus.DEAD, JobMove.RETRY, JobStatus.QUEUED),
    (JobStatus.QUEUED, JobMove.ABORT, JobStatus.ABORTED),
    (JobStatus.FAILED, JobMove.ABORT, JobStatus.ABORTED),
    (JobStatus.IN_PROGRESS, JobMove.ABORT, JobStatus.ABORTED),
)


def starts_of(move: JobMove) -> tuple[JobStatus, ...]:
    """The statuses a move may start from, in the order of ``TRANSITIONS``."""
    return tuple(dict.fromkeys(before for before, made, _ in TRANSITIONS if made is move))


def destination(before: str, move: JobMove) -> JobStatus:
    """Where a move takes a row of the given status: one place for every move but FINISH, whose
    ending the run decides."""
    (target,) = {end for start, made, end in TRANSITIONS if start == before and made is move}
    return target


RUNNABLE = starts_of(JobMove.CLAIM)  # queued, in_progress, failed
RETRYABLE = starts_of(JobMove.RETRY)  # failed, dead
ABORTABLE = starts_of(JobMove.ABORT)  # queued, failed, in_progress
