"""integrations, Duo settings, event ordering, SCIM groups and user columns

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 12:46:12.323069
"""

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('attribute_versions',
    sa.Column('organization_id', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.String(length=32), nullable=False),
    sa.Column('attribute', sa.String(length=60), nullable=False),
    sa.Column('occurred_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('event_id', sa.String(length=200), nullable=False),
    sa.PrimaryKeyConstraint('organization_id', 'user_id', 'attribute', name=op.f('pk_attribute_versions'))
    )
    op.create_table('duo_configs',
    sa.Column('organization_id', sa.String(length=32), nullable=False),
    sa.Column('client_id', sa.String(length=100), nullable=False),
    sa.Column('client_secret_encrypted', sa.String(length=500), nullable=False),
    sa.Column('api_host', sa.String(length=300), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_duo_configs_organization_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('organization_id', name=op.f('pk_duo_configs'))
    )
    op.create_table('groups',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('organization_id', sa.String(length=32), nullable=False),
    sa.Column('display_name', sa.String(length=300), nullable=False),
    sa.Column('external_id', sa.String(length=300), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('version', sa.Integer(), server_default='1', nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_groups_organization_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_groups'))
    )
    op.create_table('integrations',
    sa.Column('id', sa.String(length=32), nullable=False),
    sa.Column('organization_id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('provider', sa.String(length=40), nullable=True),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('role', sa.Enum('Read Only', 'Help Desk', 'Manager', 'Administrator', 'Administrator with Billing', name='role', native_enum=False, length=40), nullable=False),
    sa.Column('delete_mode', sa.String(length=20), server_default='suspend', nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=True),
    sa.Column('secret_encrypted', sa.String(length=500), nullable=True),
    sa.Column('previous_secret_encrypted', sa.String(length=500), nullable=True),
    sa.Column('previous_secret_expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('rotated_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_integrations_organization_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_integrations')),
    sa.UniqueConstraint('organization_id', 'name', name='uq_integrations_org_name'),
    sa.UniqueConstraint('token_hash', name=op.f('uq_integrations_token_hash'))
    )
    op.create_table('group_members',
    sa.Column('group_id', sa.String(length=32), nullable=False),
    sa.Column('user_id', sa.String(length=32), nullable=False),
    sa.Column('organization_id', sa.String(length=32), nullable=False),
    sa.ForeignKeyConstraint(['group_id'], ['groups.id'], name=op.f('fk_group_members_group_id_groups'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_group_members_user_id_users'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('group_id', 'user_id', name=op.f('pk_group_members'))
    )
    # Plain ALTERs, not batch copies: a SQLite batch copy would lose the expression indexes on users.
    op.add_column('jobs', sa.Column('defer_until', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ix_jobs_org_created', 'jobs', ['organization_id', 'created_at'], unique=False)
    op.add_column('users', sa.Column('external_id', sa.String(length=300), nullable=True))
    op.add_column('users', sa.Column('scim_deleted_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('users', sa.Column('updated_at', sa.DateTime(timezone=True), nullable=True))
    op.create_index('ix_users_org_external_id', 'users', ['organization_id', 'external_id'], unique=False)



def downgrade() -> None:
    op.drop_index('ix_users_org_external_id', table_name='users')
    op.drop_column('users', 'updated_at')
    op.drop_column('users', 'scim_deleted_at')
    op.drop_column('users', 'external_id')
    op.drop_index('ix_jobs_org_created', table_name='jobs')
    op.drop_column('jobs', 'defer_until')

    op.drop_table('group_members')
    op.drop_table('integrations')
    op.drop_table('groups')
    op.drop_table('duo_configs')
    op.drop_table('attribute_versions')
