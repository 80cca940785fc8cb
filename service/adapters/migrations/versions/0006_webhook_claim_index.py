"""jobs: an index for claiming an integration's waiting webhook rows in order

A drain claims the oldest waiting ``apply_webhook`` rows of one integration (the integration is
in the row's arguments). With a backlog, the indexes on (organization, status, ...) made
PostgreSQL read every waiting row of the organization and sort them for each claim (it cannot
estimate how many belong to the integration): 120 ms at 50,000 waiting rows. This partial index
holds only waiting webhook rows, in claim order, so a claim reads the rows it takes. PostgreSQL
only: on SQLite (the embedded default, one worker) a backlog is the one organization's anyway.

Revision ID: 0006
Revises: 0005
"""

from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

NAME = "ix_jobs_webhooks_waiting"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"""CREATE INDEX IF NOT EXISTS {NAME} ON jobs (organization_id, (args ->> 'integration_id'), created_at, id)
                       WHERE status = 'queued' AND function = 'apply_webhook'""")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"DROP INDEX {NAME}")
