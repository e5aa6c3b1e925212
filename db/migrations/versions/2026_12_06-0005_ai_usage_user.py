"""ai usage per user: whose daily token budget each usage row counts against

Revision ID: 0005_ai_usage_user
Revises: 0004_webhook_secrets
Create Date: 2026-12-06 03:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005_ai_usage_user'
down_revision = '0004_webhook_secrets'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('ai_usage', schema=None) as batch_op:
        batch_op.add_column(sa.Column('user_id', sa.Uuid(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_ai_usage_user_id_users'), 'users', ['user_id'], ['id'],
                                    ondelete='SET NULL')
        batch_op.create_index('ix_ai_usage_user_created', ['user_id', 'created_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('ai_usage', schema=None) as batch_op:
        batch_op.drop_index('ix_ai_usage_user_created')
        batch_op.drop_constraint(batch_op.f('fk_ai_usage_user_id_users'), type_='foreignkey')
        batch_op.drop_column('user_id')
