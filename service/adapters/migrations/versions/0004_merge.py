"""one schema again: sign-in, SCIM, webhooks and ops branches merged

Revision ID: 0004
Revises: 0003_ops, 0003_scim, 0003_signin, 0003_webhooks
"""

revision = "0004"
down_revision = ("0003_ops", "0003_scim", "0003_signin", "0003_webhooks")
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
