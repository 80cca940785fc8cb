"""SCIM: provider-kept user attributes, paging and lookup indexes

Revision ID: 0003_scim
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_scim"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scim_user_profiles",
        sa.Column("user_id", sa.String(length=32), nullable=False),
        sa.Column("organization_id", sa.String(length=32), nullable=False),
        sa.Column("display_name", sa.String(length=300), nullable=True),
        sa.Column("email_type", sa.String(length=40), nullable=True),
        sa.Column("attributes", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_scim_user_profiles_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_scim_user_profiles")),
    )
    # Plain CREATE INDEX, not batch copies: a SQLite batch copy would lose the expression indexes.
    op.create_index("ix_users_org_created_id", "users", ["organization_id", "created_at", "id"])
    op.create_index("uq_groups_org_display_name", "groups", ["organization_id", sa.text("lower(display_name)")],
                    unique=True)
    op.create_index("ix_groups_org_external_id", "groups", ["organization_id", "external_id"])
    op.create_index("ix_groups_org_created_id", "groups", ["organization_id", "created_at", "id"])
    op.create_index("ix_group_members_org_user", "group_members", ["organization_id", "user_id"])


def downgrade() -> None:
    op.drop_index("ix_group_members_org_user", table_name="group_members")
    op.drop_index("ix_groups_org_created_id", table_name="groups")
    op.drop_index("ix_groups_org_external_id", table_name="groups")
    op.drop_index("uq_groups_org_display_name", table_name="groups")
    op.drop_index("ix_users_org_created_id", table_name="users")
    op.drop_table("scim_user_profiles")
