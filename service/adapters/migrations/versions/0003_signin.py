"""sign-in: replay refusal for classic admins' TOTP codes

Revision ID: 0003_signin
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003_signin"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A plain ALTER, not a batch copy: a SQLite batch copy would lose the expression index on admins.
    op.add_column("admins", sa.Column("totp_last_used_step", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.drop_column("admins", "totp_last_used_step")
