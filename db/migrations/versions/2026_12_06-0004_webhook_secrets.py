"""webhook secrets: one signing secret per user

Revision ID: 0004_webhook_secrets
Revises: 0003_login_throttle
Create Date: 2026-12-06 02:45:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.types

revision = '0004_webhook_secrets'
down_revision = '0003_login_throttle'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'webhook_secrets',
        sa.Column('user_id', sa.Uuid(), nullable=False),
        sa.Column('secret', sa.String(length=128), nullable=False),
        sa.Column('created_at', db.types.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_webhook_secrets_user_id_users'),
                                ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('user_id', name=op.f('pk_webhook_secrets')),
    )


def downgrade() -> None:
    op.drop_table('webhook_secrets')
