"""webhooks: HR employee-id links and the per-event outcomes of webhook jobs

Revision ID: 0003_webhooks
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_webhooks"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "employee_links",
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("integration_id", sa.String(length=32), nullable=False),
        sa.Column("employee_id", sa.String(length=200), nullable=False),
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["integration_id"], ["integrations.id"],
                                name=op.f("fk_employee_links_integration_id_integrations"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_employee_links_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("organization_id", "integration_id", "employee_id",
                                name=op.f("pk_employee_links")),
    )
    op.create_table(
        "webhook_event_outcomes",
        sa.Column("job_id", sa.String(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=20), nullable=False),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job_id", "seq", name=op.f("pk_webhook_event_outcomes")),
    )


def downgrade() -> None:
    op.drop_table("webhook_event_outcomes")
    op.drop_table("employee_links")
