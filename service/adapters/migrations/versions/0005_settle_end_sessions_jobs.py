"""jobs: settle the end_sessions rows of earlier versions, whose job function is gone

Sessions end at commit (the auth epoch moves in the change's transaction) and their Redis keys are
deleted right after it, so no worker runs ``end_sessions`` any more. A row an earlier version left
unfinished would be handed to arq again by the reconciler forever; it is marked complete instead,
with nothing left to do: its sessions were refused from the commit on, and their keys expire.

Revision ID: 0005
Revises: 0004
"""

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

jobs = sa.table("jobs", sa.column("function", sa.String), sa.column("status", sa.String),
                sa.column("result", sa.JSON), sa.column("finished_at", sa.DateTime(timezone=True)))
UNFINISHED = ("queued", "in_progress", "failed")


def upgrade() -> None:
    op.execute(
        jobs.update()
        .where(jobs.c.function == "end_sessions", jobs.c.status.in_(UNFINISHED))
        .values(status="complete", finished_at=datetime.now(UTC),
                result={"status": "nothing to do: sessions end at commit and their keys expire"})
    )


def downgrade() -> None:
    pass  # the rows' work is not worth doing again
