"""ops and audit: indexes for the seed's admin-login filter and for job queue views

Revision ID: 0003_ops
Revises: 0002
"""

from alembic import op

revision = "0003_ops"
down_revision = "0002"
branch_labels = None
depends_on = None

INDEXES = [
    ("ix_insights_org_target_admin_time", "insights_events",
     ["organization_id", "target_resource_type", "initiated_by_administrator", "timestamp", "id"]),
    ("ix_jobs_org_status_created", "jobs", ["organization_id", "status", "created_at"]),
    ("ix_jobs_org_status_finished", "jobs", ["organization_id", "status", "finished_at"]),
]


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns)


def downgrade() -> None:
    for name, table, _ in reversed(INDEXES):
        op.drop_index(name, table_name=table)
